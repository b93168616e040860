package claim

import "testing"

func TestIdemRoundTrip(t *testing.T) {
	for _, r := range []Idem{
		{State: IdemAccepted, ClaimID: "c1.x", Value: 50, ClaimedAtMs: 10, ExpiresAtMs: 20, OutboxID: "10-0", SKU: "s", UserID: "u", DeviceID: "d"},
		{State: IdemSettled, ClaimID: "c1.y", Value: 1, ClaimedAtMs: 1, ExpiresAtMs: 2, SKU: "s", UserID: "u", DeviceID: "d"},
	} {
		got, ok := ParseIdem(string(AppendIdem(nil, &r)))
		if !ok || got != r {
			t.Errorf("round trip of %+v: %+v, %v", r, got, ok)
		}
	}
	// The byte layout claim.lua writes for a remembered rejection.
	if got := string(AppendRejection(nil, CodeEnded, "s", "u", "d")); got != "R\t14\t\t\t\t\ts\tu\td" {
		t.Errorf("rejection record %q", got)
	}
	if st, c := IdemState("D\tc1.x\t5\t1\t2\t\ts\tu\td"); st != IdemDurable || c != "c1.x" {
		t.Errorf("IdemState: %c %q", st, c)
	}
	for _, bad := range []string{"", "A", "A\tc", "AB\tc\t1\t1\t1\t\ts\tu\td", "A\tc\t1\t1\t1\t\ts\tu\td\textra"} {
		if _, ok := ParseIdem(bad); ok {
			t.Errorf("ParseIdem(%q) accepted", bad)
		}
	}
}

func TestFromOutbox(t *testing.T) {
	r := FromOutbox("camp", "5-1", map[string]any{"c": "camp.x", "r": "rq", "s": "sku", "u": "u", "d": "d",
		"i": "1.2.3.4", "v": "50", "t": "100", "e": "200", "b": "bl", "h": "partner:p"})
	want := Record{Version: Version, ClaimID: "camp.x", RequestID: "rq", CampaignID: "camp", BusinessLine: "bl",
		SKU: "sku", UserID: "u", DeviceID: "d", IP: "1.2.3.4", Value: 50, ClaimedAtMs: 100, ExpiresAtMs: 200,
		OutboxID: "5-1", Channel: "partner:p"}
	if r != want {
		t.Errorf("FromOutbox: %+v", r)
	}
}
