package traffic

import (
	"bytes"
	"encoding/json"
	"math"
	"strings"
	"testing"
)

func model(t *testing.T, cfg Config) *Model {
	t.Helper()
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func base() Config {
	return Config{Campaign: "cny-2027", SKUs: []string{"rp-50", "rp-100", "rp-500"}, Users: 50000, Seed: 42,
		Mix: Mix{Bots: 0.05, Retries: 0.10, Invalid: 0.01}}
}

func TestSameSeedSameSequence(t *testing.T) {
	a, b := model(t, base()), model(t, base())
	cfg := base()
	cfg.Seed = 43
	c := model(t, cfg)
	differ := false
	for i := 0; i < 20000; i++ {
		ra, rb, rc := a.Next(), b.Next(), c.Next()
		if ra.Kind != rb.Kind || ra.RequestID != rb.RequestID || !bytes.Equal(ra.Body, rb.Body) ||
			ra.IP != rb.IP || ra.ContentType != rb.ContentType || ra.Orig != rb.Orig {
			t.Fatalf("request %d differs with the same seed:\n%+v\n%+v", i, ra, rb)
		}
		if !bytes.Equal(ra.Body, rc.Body) {
			differ = true
		}
	}
	if !differ {
		t.Fatal("a different seed gave the same sequence")
	}
}

func TestShapes(t *testing.T) {
	m := model(t, base())
	const n = 200000
	kinds := map[Kind]int{}
	skus := map[string]int{}
	botDevices, botIPs := map[string]bool{}, map[string]bool{}
	botUsers := map[string]bool{}
	byID := map[string]*Request{}
	for i := 0; i < n; i++ {
		r := m.Next()
		kinds[r.Kind]++
		switch r.Kind {
		case Normal, Bot:
			skus[r.SKU]++
			if _, dup := byID[r.RequestID]; dup {
				t.Fatalf("request_id %s used by two fresh requests", r.RequestID)
			}
			byID[r.RequestID] = r
			var body map[string]string
			if err := json.Unmarshal(r.Body, &body); err != nil {
				t.Fatalf("body %s: %v", r.Body, err)
			}
			for _, f := range []string{"campaign_id", "sku", "user_id", "device_id", "request_id"} {
				if !ValidID(body[f]) {
					t.Fatalf("body %s: %s %q is not a valid id", r.Body, f, body[f])
				}
			}
			if r.Kind == Bot {
				botDevices[r.Device], botIPs[r.IP], botUsers[r.User] = true, true, true
			}
		case Retry:
			orig, ok := byID[r.RequestID]
			if !ok || orig.Seq != r.Orig || !bytes.Equal(orig.Body, r.Body) || orig.Kind != r.OrigKind {
				t.Fatalf("retry %+v does not repeat its original %+v", r, orig)
			}
		case Invalid:
			if ExpectedStatus(r.Invalid) == 0 {
				t.Fatalf("invalid request with unknown malformation %q", r.Invalid)
			}
			if r.Invalid != "not_json_content_type" && r.Invalid != "not_json" && r.Invalid != "oversized" {
				var body map[string]any
				if err := json.Unmarshal(r.Body, &body); err != nil {
					t.Fatalf("%s body should still be JSON: %s", r.Invalid, r.Body)
				}
			}
			if r.Invalid == "oversized" && len(r.Body) <= 4096 {
				t.Fatalf("oversized body of %d bytes", len(r.Body))
			}
		}
	}
	share := func(k Kind) float64 { return float64(kinds[k]) / n }
	for _, tc := range []struct {
		k    Kind
		want float64
	}{{Bot, 0.05}, {Retry, 0.10}, {Invalid, 0.01}, {Normal, 0.84}} {
		if got := share(tc.k); math.Abs(got-tc.want) > 0.01 {
			t.Errorf("%s share %.3f, want %.3f", tc.k, got, tc.want)
		}
	}
	// Bot farms: many accounts on a handful of devices and IPs.
	if len(botDevices) > 20 || len(botIPs) > 4 || len(botUsers) < 1000 {
		t.Errorf("bots: %d users on %d devices and %d IPs, want ≥1000 users on ≤20 devices and ≤4 IPs",
			len(botUsers), len(botDevices), len(botIPs))
	}
	// Zipf skew (s=1.1): weights 1, 1/2^1.1, 1/3^1.1 normalised.
	w := m.Weights()
	fresh := kinds[Normal] + kinds[Bot]
	for i, s := range base().SKUs {
		got := float64(skus[s]) / float64(fresh)
		if math.Abs(got-w[i]) > 0.01 {
			t.Errorf("sku %s share %.3f, want %.3f", s, got, w[i])
		}
	}
	if !(w[0] > w[1] && w[1] > w[2]) || math.Abs(w[0]-1/(1+math.Pow(2, -1.1)+math.Pow(3, -1.1))) > 1e-9 {
		t.Errorf("weights %v are not zipf(1.1)", w)
	}
}

func TestUniformAndNoMix(t *testing.T) {
	cfg := base()
	cfg.ZipfS = -1
	cfg.Mix = Mix{}
	m := model(t, cfg)
	for _, w := range m.Weights() {
		if math.Abs(w-1.0/3) > 1e-9 {
			t.Fatalf("uniform weights %v", m.Weights())
		}
	}
	for i := 0; i < 1000; i++ {
		if r := m.Next(); r.Kind != Normal {
			t.Fatalf("request %d is %s with an empty mix", i, r.Kind)
		}
	}
}

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		mut  func(*Config)
		want string
	}{
		{func(c *Config) { c.Campaign = "" }, "Campaign"},
		{func(c *Config) { c.Campaign = "a b" }, "Campaign"},
		{func(c *Config) { c.SKUs = nil }, "SKUs"},
		{func(c *Config) { c.SKUs = []string{"ok", "no{"} }, "SKUs"},
		{func(c *Config) { c.Mix = Mix{Bots: 0.6, Retries: 0.6} }, "mix"},
		{func(c *Config) { c.Users = -5 }, "Users"},
		{func(c *Config) { c.IDPrefix = strings.Repeat("p", 41) }, "IDPrefix"},
	} {
		cfg := base()
		tc.mut(&cfg)
		if _, err := New(cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("got %v, want an error naming %s", err, tc.want)
		}
	}
}

func TestParseMix(t *testing.T) {
	m, err := ParseMix("bots=5%,retries=10%,invalid=0.01")
	if err != nil || m != (Mix{Bots: 0.05, Retries: 0.10, Invalid: 0.01}) {
		t.Fatalf("ParseMix = %+v, %v", m, err)
	}
	for _, bad := range []string{"bots", "bots=x", "bots=150%", "robots=1%", "bots=60%,retries=60%", "bots=-1%"} {
		if _, err := ParseMix(bad); err == nil {
			t.Errorf("ParseMix(%q) accepted", bad)
		}
	}
	if m, err := ParseMix("none"); err != nil || m != (Mix{}) {
		t.Errorf("ParseMix(none) = %+v, %v", m, err)
	}
}
