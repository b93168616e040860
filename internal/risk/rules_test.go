package risk

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/flashgate/flashgate/internal/claim"
)

func TestParseValue(t *testing.T) {
	cases := []struct {
		key, val string
		want     int64
		unset    bool
		err      string
	}{
		{key: DeviceMax, val: "3", want: 3},
		{key: DeviceMax, val: "0", want: 0},
		{key: DeviceMax, val: "1000000", want: 1000000},
		{key: DeviceWindow, val: "60s", want: 60000},
		{key: DeviceWindow, val: "1.5s", want: 1500},
		{key: FreezeWindow, val: "7d", want: 7 * 24 * 3600 * 1000},
		{key: FreezeFor, val: "30d", want: 30 * 24 * 3600 * 1000},
		{key: IPWindow, val: "24h", want: 24 * 3600 * 1000},
		{key: Shadow, val: "on", want: 1},
		{key: Shadow, val: "OFF", want: 0},
		{key: UserMax, val: Unset, unset: true},
		{key: "device.maximum", val: "3", err: "device.maximum: unknown rule key"},
		{key: DeviceMax, val: "-1", err: "device.max: negative count"},
		{key: DeviceMax, val: "1000001", err: "beyond the maximum 1000000"},
		{key: DeviceMax, val: "3.5", err: `"3.5" is not a whole number`},
		{key: DeviceMax, val: "", err: "empty value"},
		{key: DeviceWindow, val: "0s", err: "zero window"},
		{key: DeviceWindow, val: "-1m", err: "negative duration"},
		{key: DeviceWindow, val: "999ms", err: "shorter than the minimum 1s"},
		{key: DeviceWindow, val: "25h", err: "beyond the maximum 1d"},
		{key: FreezeWindow, val: "8d", err: "beyond the maximum 7d"},
		{key: FreezeFor, val: "31d", err: "beyond the maximum 30d"},
		{key: DeviceWindow, val: "1500us", err: "shorter than the minimum"},
		{key: DeviceWindow, val: "1.0005s", err: "not a whole number of milliseconds"},
		{key: DeviceWindow, val: "60", err: "not a duration"},
		{key: Shadow, val: "yes please", err: "want on or off"},
	}
	for _, c := range cases {
		a, err := ParseValue(c.key, c.val)
		switch {
		case c.err != "":
			if err == nil || !strings.Contains(err.Error(), c.err) || !strings.HasPrefix(err.Error(), c.key+": ") {
				t.Errorf("%s=%s: got %v; want an error naming the key and saying %q", c.key, c.val, err, c.err)
			}
		case err != nil:
			t.Errorf("%s=%s: %v", c.key, c.val, err)
		case a.Value != c.want || a.Unset != c.unset:
			t.Errorf("%s=%s: got %+v; want %d unset=%v", c.key, c.val, a, c.want, c.unset)
		}
	}
}

func TestFormatRoundTrips(t *testing.T) {
	for _, s := range Specs {
		for _, v := range []int64{0, 1, 1000, 1500, 60000, 3600000, 86400000, 7 * 86400000} {
			str := Format(s.Key, v)
			a, err := ParseValue(s.Key, str)
			if err != nil {
				continue // out of that key's range
			}
			if a.Value != v && !(s.kind == kindBool && v != 0 && a.Value == 1) {
				t.Errorf("%s: %d formats as %q, parses as %d", s.Key, v, str, a.Value)
			}
		}
	}
}

func TestMergeAndCheck(t *testing.T) {
	global := Rules{DeviceMax: 10, DeviceWindow: 60000, Shadow: 1, FreezeMax: 5, FreezeWindow: 3600000, FreezeFor: 3600000}
	camp := Rules{DeviceMax: 3, Shadow: 0}
	m := Merge(global, camp)
	if m[DeviceMax] != 3 || m[DeviceWindow] != 60000 || m[Shadow] != 0 || m[FreezeMax] != 5 {
		t.Errorf("merge: %v", m)
	}
	e := m.Effective()
	if !e.Device.On() || e.Device.Window != time.Minute || e.IP.On() || e.Shadow || !e.FreezeOn() {
		t.Errorf("effective: %+v", e)
	}
	if err := Check(Rules{IPMax: 3}); err == nil || !strings.HasPrefix(err.Error(), "ip.window: required") {
		t.Errorf("check ip.max without window: %v", err)
	}
	if err := Check(Rules{FreezeMax: 3, FreezeWindow: 1000}); err == nil || !strings.HasPrefix(err.Error(), "freeze.for: required") {
		t.Errorf("check freeze without for: %v", err)
	}
	if err := Check(Rules{DeviceMax: 0}); err != nil {
		t.Errorf("a rule that is off needs no window: %v", err)
	}
	d := Diff(Rules{DeviceMax: 3}, Rules{DeviceMax: 5, DeviceWindow: 60000})
	if strings.Join(d, "|") != "device.max: 3 → 5|device.window: - → 1m" {
		t.Errorf("diff: %q", d)
	}
}

func TestParseAssignments(t *testing.T) {
	as, err := ParseAssignments([]string{"device.max=3", " ip.window = 10s ", "user.max=default"})
	if err != nil || len(as) != 3 || as[1].Value != 10000 || !as[2].Unset {
		t.Fatalf("got %+v, %v", as, err)
	}
	for args, want := range map[string]string{
		"device.max":                 "device.max: expected key=value",
		"device.max=1 device.max=2":  "device.max: given twice",
		"device.max=1 nonsense.key=": "nonsense.key: unknown rule key",
	} {
		if _, err := ParseAssignments(strings.Fields(args)); err == nil || !strings.HasPrefix(err.Error(), want) || !IsFieldError(err) {
			t.Errorf("%q: %v, want %q", args, err, want)
		}
	}
}

func sample() Decision {
	return Decision{TimeMs: 1_700_000_000_123, CampaignID: "cny-2027", SKU: "rp-50", UserID: "u-1", DeviceID: "d-\"9f\"",
		IP: "2001:db8::1", RequestID: "r-1", Code: claim.CodeDeviceVelocity, RetryAfterMs: 1234,
		Seen: Seen{Device: 3, IP: -1, User: 0, FreezeDevice: -1, FreezeUser: -1, Flags: DeviceVelocity | BlockedUser | ShadowMode | FrozeUser}}
}

func TestDecisionRoundTrip(t *testing.T) {
	for _, d := range []Decision{sample(),
		{TimeMs: 1, CampaignID: "c", Code: claim.CodeAccepted, ClaimID: "c.x", Seen: NotEvaluated},
		{TimeMs: 2, CampaignID: "c", Code: claim.CodeSoldOut, Replayed: true, Seen: NotEvaluated},
		{TimeMs: 3, CampaignID: "c", Code: claim.CodeKeyReuse, Seen: NotEvaluated},
	} {
		b := d.AppendJSON(nil)
		got, err := DecodeDecision(b)
		if err != nil {
			t.Fatalf("%s: %v", b, err)
		}
		if got != d {
			t.Errorf("round trip of %s:\n got %+v\nwant %+v", b, got, d)
		}
	}
	want := `{"v":1,"t":1700000000123,"campaign_id":"cny-2027","sku":"rp-50","user_id":"u-1","device_id":"d-\"9f\"","ip":"2001:db8::1","request_id":"r-1","result":"rejected","reason":"device_velocity","code":20,"retry_after_ms":1234,"seen":{"device":3,"user":0},"hits":["blocked_user","device_velocity"],"shadow":true,"froze":["user"]}`
	s := sample()
	if got := string(s.AppendJSON(nil)); got != want {
		t.Errorf("encoding:\n got %s\nwant %s", got, want)
	}
}

func TestDecodeDecisionRefuses(t *testing.T) {
	for _, in := range []string{
		``, `{}`, `[]`, `{"v":2,"t":1,"code":1,"campaign_id":"c","result":"accepted"}`,
		`{"v":1,"t":1,"code":1,"campaign_id":"c","result":"rejected"}`,
		`{"v":1,"t":1,"code":1,"campaign_id":"c","result":"accepted","extra":1}`,
		`{"v":1,"code":1,"campaign_id":"c","result":"accepted"}`,
		`{"v":1,"t":1,"code":20,"campaign_id":"c","result":"rejected","hits":["nope"]}`,
		`{"v":1,"t":1,"code":1,"campaign_id":"c","result":"accepted"} {}`,
		`{"v":1,"t":1,"code":1,"campaign_id":"c","result":"accepted","retry_after_ms":-1}`,
		`{"v":1,"t":1,"code":10,"campaign_id":"c","result":"rejected","reason":"budget_exhausted"}`,
		`{"v":1,"t":1,"code":20,"campaign_id":"c","result":"rejected","seen":{"device":-2}}`,
	} {
		if _, err := DecodeDecision([]byte(in)); err == nil {
			t.Errorf("%q decoded", in)
		}
	}
}

// The gateway encodes a decision per claim: into a buffer it reuses, with no allocation.
func TestDecisionEncodeAllocs(t *testing.T) {
	d := sample()
	buf := make([]byte, 0, 1024)
	if n := testing.AllocsPerRun(200, func() { buf = d.AppendJSON(buf[:0]) }); n != 0 {
		t.Errorf("%v allocations per AppendJSON, want 0", n)
	}
}

func FuzzDecodeDecision(f *testing.F) {
	s := sample()
	f.Add(s.AppendJSON(nil))
	f.Add([]byte(`{"v":1,"t":1,"code":1,"campaign_id":"c","result":"accepted"}`))
	f.Add([]byte(`{"v":1,"t":1,"code":30,"campaign_id":"c","result":"rejected","reason":"blocked","hits":["frozen_device"],"seen":{"freeze_device":4}}`))
	f.Add([]byte(`{"v":1,"t":1,"code":1,"campaign_id":"c","result":"accepted","retry_after_ms":-5,"seen":{"ip":-3}}`))
	f.Add([]byte(`{"v":1,"t":1,"code":11,"campaign_id":"c\xff","result":"rejected","reason":"sold_out","hits":["ip_velocity","ip_velocity"]}`))
	f.Add([]byte(`{"v":1,"t":1,"code":1,"campaign_id":"c","result":"accepted","seen":{"bogus":1}}`))
	f.Add([]byte(`{"v":1,"t":1,"code":1,"campaign_id":"c","result":"accepted","extra":1}`))
	f.Add([]byte(`{"v":1,"t":1,"code":1,"campaign_id":"c","result":"accepted","campaign_id":""}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := DecodeDecision(b)
		if err != nil {
			if !errors.Is(err, ErrDecision) || d != (Decision{}) {
				t.Fatalf("DecodeDecision(%q) = %+v, %v; a refusal must wrap ErrDecision and return nothing", b, d, err)
			}
			return
		}
		// What the decoder lets through is what riskctl relies on.
		s := d.Seen
		if d.CampaignID == "" || d.RetryAfterMs < 0 || s.Device < -1 || s.IP < -1 || s.User < -1 ||
			s.FreezeDevice < -1 || s.FreezeUser < -1 || s.Flags&^(Hits|ShadowMode|FrozeDevice|FrozeUser) != 0 {
			t.Fatalf("DecodeDecision(%q) accepted %+v", b, d)
		}
		enc := d.AppendJSON(nil)
		if !json.Valid(enc) {
			t.Fatalf("AppendJSON(%+v) = %q: not JSON", d, enc)
		}
		// What decodes re-encodes to something that decodes to the same decision.
		again, err := DecodeDecision(enc)
		if err != nil || again != d {
			t.Fatalf("re-encoding %q: %+v, %v (was %+v)", b, again, err, d)
		}
	})
}

// FuzzDecisionRoundTrip: every decision the gateway can encode, riskctl decodes back to
// the same decision (up to what the record does not carry: a non-positive
// retry_after_ms, counters below -1, flags outside the record's vocabulary, and invalid
// UTF-8, which becomes U+FFFD the way encoding/json writes it).
func FuzzDecisionRoundTrip(f *testing.F) {
	s := sample()
	f.Add(s.TimeMs, s.CampaignID, s.SKU, s.UserID, s.DeviceID, s.IP, s.RequestID, s.ClaimID, s.Code, s.Replayed, s.RetryAfterMs,
		s.Seen.Device, s.Seen.IP, s.Seen.User, s.Seen.FreezeDevice, s.Seen.FreezeUser, int64(s.Seen.Flags))
	f.Add(int64(-1), "c\xff", "s\t", "u\"", "d\x00", "::1", "r:1", "", 999, true, int64(-5), int64(-7), int64(0), int64(-1), int64(3), int64(-2), int64(-1))
	f.Fuzz(func(t *testing.T, tm int64, camp, sku, user, dev, ip, rq, claimID string, code int, replayed bool, retry,
		sd, si, su, sfd, sfu, flags int64) {
		if camp == "" {
			return // the gateway never decides a claim without a campaign
		}
		d := Decision{TimeMs: tm, CampaignID: camp, SKU: sku, UserID: user, DeviceID: dev, IP: ip, RequestID: rq,
			Code: code, Replayed: replayed, ClaimID: claimID, RetryAfterMs: retry,
			Seen: Seen{Device: sd, IP: si, User: su, FreezeDevice: sfd, FreezeUser: sfu, Flags: Flags(flags)}}
		got, err := DecodeDecision(d.AppendJSON(nil))
		if err != nil {
			t.Fatalf("DecodeDecision(AppendJSON(%+v)): %v", d, err)
		}
		carried := func(s string) string { // what encoding/json would carry of s
			b, _ := json.Marshal(s)
			var out string
			_ = json.Unmarshal(b, &out)
			return out
		}
		counter := func(v int64) int64 { return max(v, -1) }
		want := Decision{TimeMs: tm, CampaignID: carried(camp), SKU: carried(sku), UserID: carried(user),
			DeviceID: carried(dev), IP: carried(ip), RequestID: carried(rq), Code: code, Replayed: replayed,
			ClaimID: carried(claimID), RetryAfterMs: max(retry, 0),
			Seen: Seen{Device: counter(sd), IP: counter(si), User: counter(su), FreezeDevice: counter(sfd),
				FreezeUser: counter(sfu), Flags: Flags(flags) & (Hits | ShadowMode | FrozeDevice | FrozeUser)}}
		if got != want {
			t.Fatalf("round trip of %+v:\n got %+v\nwant %+v", d, got, want)
		}
	})
}
