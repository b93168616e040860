package claim

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

func sampleRecord() Record {
	return Record{Version: Version, ClaimID: "cny-2027.0123456789abcdefghijklmnop", RequestID: "6f1c2b",
		CampaignID: "cny-2027", BusinessLine: "payments", SKU: "rp-50", UserID: "u-1001", DeviceID: "d-9f2c",
		IP: "2001:db8::1", Value: 50, ClaimedAtMs: 1_800_000_000_000, ExpiresAtMs: 1_800_259_200_000, OutboxID: "1800000000000-0", Channel: ChannelApp}
}

// FuzzDecode holds the record decoder to its contract on any bytes (a record on
// flash.claims or in the outbox could be damaged or written by a future version):
//
//   - Decode never panics, and every refusal wraps ErrMalformed, ErrVersion or
//     ErrMissingData;
//   - what it accepts has a known version, every identifying field, a positive value,
//     claimed_at_ms > 0 and expires_at_ms >= claimed_at_ms, and only valid UTF-8;
//   - what it accepts survives AppendJSON unchanged (the gateway's encoder and this
//     decoder agree), and AppendJSON's output is valid JSON that encoding/json reads
//     back as the same record.
func FuzzDecode(f *testing.F) {
	r := sampleRecord()
	f.Add(r.AppendJSON(nil))
	r.UserID, r.DeviceID = "u\t\"\\\x01é", "\xff"
	f.Add(r.AppendJSON(nil))
	for _, s := range []string{
		`{}`, `null`, `[]`, `{"v":2}`, `{"v":0,"claim_id":"a"}`, `{"v":1.5}`, `{"V":1,"CLAIM_ID":"a"}`,
		`{"v":1,"claim_id":"a","request_id":"b","campaign_id":"c","business_line":"d","sku":"e","user_id":"f","device_id":"g","value":1,"claimed_at_ms":1,"expires_at_ms":1,"later_field":{"x":[1]}}`,
		`{"v":1,"claim_id":"a","request_id":"b","campaign_id":"c","business_line":"d","sku":"e","user_id":"f","device_id":"g","value":-1,"claimed_at_ms":1,"expires_at_ms":1}`,
		`{"v":1,"claim_id":"a","request_id":"b","campaign_id":"c","business_line":"d","sku":"e","user_id":"f","device_id":"g","value":1,"claimed_at_ms":2,"expires_at_ms":1}`,
		`{"v":1,"claim_id":"a","claim_id":"","request_id":"b"}`, `{"v":1,"value":1e400}`, `{"v":1,"value":"1"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := Decode(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrVersion) && !errors.Is(err, ErrMissingData) {
				t.Fatalf("Decode(%q) error %v wraps none of the package's errors", b, err)
			}
			if r != (Record{}) {
				t.Fatalf("Decode(%q) failed but returned %+v", b, r)
			}
			return
		}
		if r.Version < 1 || r.Version > Version || r.Value <= 0 || r.ClaimedAtMs <= 0 || r.ExpiresAtMs < r.ClaimedAtMs {
			t.Fatalf("Decode(%q) accepted %+v", b, r)
		}
		for _, s := range []string{r.ClaimID, r.RequestID, r.CampaignID, r.BusinessLine, r.SKU, r.UserID, r.DeviceID} {
			if s == "" {
				t.Fatalf("Decode(%q) accepted an empty identifying field: %+v", b, r)
			}
		}
		for _, s := range []string{r.ClaimID, r.RequestID, r.CampaignID, r.BusinessLine, r.SKU, r.UserID, r.DeviceID, r.IP, r.OutboxID} {
			if !utf8.ValidString(s) {
				t.Fatalf("Decode(%q) accepted invalid UTF-8 %q", b, s)
			}
		}
		enc := r.AppendJSON(nil)
		if !json.Valid(enc) {
			t.Fatalf("AppendJSON(%+v) = %q: not JSON", r, enc)
		}
		again, err := Decode(enc)
		if err != nil || again != r {
			t.Fatalf("round trip of %q: %+v, %v; was %+v", b, again, err, r)
		}
		var std Record
		if err := json.Unmarshal(enc, &std); err != nil || std != r {
			t.Fatalf("encoding/json reads AppendJSON(%+v) as %+v, %v", r, std, err)
		}
	})
}

// FuzzAppendString: for any string, AppendString writes valid JSON that encoding/json
// decodes to what encoding/json's own encoder would have carried (invalid UTF-8 becomes
// U+FFFD byte by byte, everything else is kept exactly).
func FuzzAppendString(f *testing.F) {
	for _, s := range []string{"", "a", "\"\\", "\x00\x1f\x7f", "\t\n\r", "é红包😀", "\xff", "a\xc3", "\xed\xa0\x80", "\u2028</script>"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		enc := AppendString([]byte("x"), s)[1:]
		if !json.Valid(enc) {
			t.Fatalf("AppendString(%q) = %q: not JSON", s, enc)
		}
		var got, want string
		if err := json.Unmarshal(enc, &got); err != nil {
			t.Fatalf("AppendString(%q) = %q: %v", s, enc, err)
		}
		std, _ := json.Marshal(s)
		if err := json.Unmarshal(std, &want); err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Fatalf("AppendString(%q) decodes to %q; encoding/json carries %q", s, got, want)
		}
		if utf8.ValidString(s) && got != s {
			t.Fatalf("AppendString changed valid UTF-8 %q to %q", s, got)
		}
	})
}

func TestDecodeRefuses(t *testing.T) {
	good := sampleRecord()
	if r, err := Decode(good.AppendJSON(nil)); err != nil || r != good {
		t.Fatalf("Decode(AppendJSON(sample)) = %+v, %v", r, err)
	}
	for _, tc := range []struct {
		mutate func(*Record)
		want   error
	}{
		{func(r *Record) { r.Version = 2 }, ErrVersion},
		{func(r *Record) { r.Version = 0 }, ErrVersion},
		{func(r *Record) { r.SKU = "" }, ErrMissingData},
		{func(r *Record) { r.BusinessLine = "" }, ErrMissingData},
		{func(r *Record) { r.Value = 0 }, ErrMalformed},
		{func(r *Record) { r.ExpiresAtMs = r.ClaimedAtMs - 1 }, ErrMalformed},
	} {
		r := sampleRecord()
		tc.mutate(&r)
		if _, err := Decode(r.AppendJSON(nil)); !errors.Is(err, tc.want) {
			t.Errorf("Decode(%+v) = %v; want %v", r, err, tc.want)
		}
	}
	if _, err := Decode([]byte(`{"v":1,"claim_id":`)); !errors.Is(err, ErrMalformed) {
		t.Errorf("truncated record: %v", err)
	}
}

func TestCheckIDs(t *testing.T) {
	good := Record{Version: 1, ClaimID: "camp-1.0123456789abcdefghijklmnop", RequestID: "r:1", CampaignID: "camp-1",
		BusinessLine: "bl_1", SKU: "rp-50", UserID: "u.1", DeviceID: "d-1", IP: "2001:db8::1", Value: 50,
		ClaimedAtMs: 1, ExpiresAtMs: 2, OutboxID: "1712345678901-0"}
	if err := good.CheckIDs(); err != nil {
		t.Fatalf("good record: %v", err)
	}
	long := strings.Repeat("a", 65)
	for _, tc := range []struct {
		name  string
		edit  func(r *Record)
		field string
	}{
		{"oversized user", func(r *Record) { r.UserID = long }, "user_id:"},
		{"64 is fine", func(r *Record) { r.UserID = long[:64] }, ""},
		{"brace in device", func(r *Record) { r.DeviceID = "d}x" }, "device_id:"},
		{"tab in request", func(r *Record) { r.RequestID = "r\t1" }, "request_id:"},
		{"oversized campaign", func(r *Record) { r.CampaignID = long; r.ClaimID = long + ".0123456789abcdefghijklmnop" }, "campaign_id:"},
		{"claim of another campaign", func(r *Record) { r.ClaimID = "camp-2.0123456789abcdefghijklmnop" }, "claim_id:"},
		{"claim id short", func(r *Record) { r.ClaimID = "camp-1.0123" }, "claim_id:"},
		{"claim id outside base32", func(r *Record) { r.ClaimID = "camp-1.0123456789abcdefghijklmnoz" }, "claim_id:"},
		{"claim id without dot", func(r *Record) { r.ClaimID = "camp-1x0123456789abcdefghijklmnop" }, "claim_id:"},
		{"sku empty", func(r *Record) { r.SKU = "" }, "sku:"},
		{"ip with space", func(r *Record) { r.IP = "1.2.3.4 x" }, "ip:"},
		{"ip oversized", func(r *Record) { r.IP = long }, "ip:"},
		{"ip empty is fine", func(r *Record) { r.IP = "" }, ""},
		{"outbox not a stream id", func(r *Record) { r.OutboxID = "abc" }, "outbox_id:"},
		{"outbox no seq", func(r *Record) { r.OutboxID = "12-" }, "outbox_id:"},
	} {
		r := good
		tc.edit(&r)
		err := r.CheckIDs()
		switch {
		case tc.field == "" && err != nil:
			t.Errorf("%s: %v; want accepted", tc.name, err)
		case tc.field != "" && (err == nil || !strings.HasPrefix(err.Error(), tc.field)):
			t.Errorf("%s: err %v; want one starting %q", tc.name, err, tc.field)
		}
	}
}

// TestChannel: a record from before channels (no "channel") decodes as the app channel,
// partner and push channels travel as written, and anything else is malformed.
func TestChannel(t *testing.T) {
	old := []byte(`{"v":1,"claim_id":"c.x","request_id":"r","campaign_id":"c","business_line":"b","sku":"s",` +
		`"user_id":"u","device_id":"d","ip":"","value":1,"claimed_at_ms":1,"expires_at_ms":2,"outbox_id":""}`)
	r, err := Decode(old)
	if err != nil || r.Channel != ChannelApp {
		t.Fatalf("a record without channel decodes as %q, %v; want app", r.Channel, err)
	}
	for _, ch := range []string{"partner:acme", "push:spring-1", "app"} {
		rec := sampleRecord()
		rec.Channel = ch
		got, err := Decode(rec.AppendJSON(nil))
		if err != nil || got != rec {
			t.Fatalf("channel %q: round trip %+v, %v", ch, got, err)
		}
	}
	for _, ch := range []string{"partner:", "push:", "web", "partner:a:b", "partner:" + strings.Repeat("x", 65)} {
		rec := sampleRecord()
		rec.Channel = ch
		if _, err := Decode(rec.AppendJSON(nil)); !errors.Is(err, ErrMalformed) {
			t.Fatalf("channel %q: Decode error %v, want ErrMalformed", ch, err)
		}
	}
	empty := sampleRecord()
	empty.Channel = ""
	if got, err := Decode(empty.AppendJSON(nil)); err != nil || got.Channel != ChannelApp {
		t.Fatalf("an empty channel is written as app: got %q, %v", got.Channel, err)
	}
}
