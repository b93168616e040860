package risk

import (
	"strings"
	"testing"
	"time"

	"github.com/flashgate/flashgate/scripts"
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
		IP: "2001:db8::1", RequestID: "r-1", Code: scripts.CodeDeviceVelocity, RetryAfterMs: 1234,
		Seen: Seen{Device: 3, IP: -1, User: 0, FreezeDevice: -1, FreezeUser: -1, Flags: DeviceVelocity | BlockedUser | ShadowMode | FrozeUser}}
}

func TestDecisionRoundTrip(t *testing.T) {
	for _, d := range []Decision{sample(),
		{TimeMs: 1, CampaignID: "c", Code: scripts.CodeAccepted, ClaimID: "c.x", Seen: NotEvaluated},
		{TimeMs: 2, CampaignID: "c", Code: scripts.CodeSoldOut, Replayed: true, Seen: NotEvaluated},
		{TimeMs: 3, CampaignID: "c", Code: scripts.CodeKeyReuse, Seen: NotEvaluated},
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
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := DecodeDecision(b)
		if err != nil {
			return
		}
		// What decodes re-encodes to something that decodes to the same decision.
		again, err := DecodeDecision(d.AppendJSON(nil))
		if err != nil || again != d {
			t.Fatalf("re-encoding %q: %+v, %v (was %+v)", b, again, err, d)
		}
	})
}
