package setup

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flashgate/flashgate/internal/catalog"
)

// The bodies setup sends are exactly what the gateway's own decoder accepts: the test
// decodes them with catalog.DecodeCampaign rather than with a copy of its rules.
func TestSetupSendsWhatTheCatalogAccepts(t *testing.T) {
	var mu sync.Mutex
	got := map[string]string{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPut || r.Header.Get("Authorization") != "Bearer s3cret" {
			http.Error(w, `{"error":"unauthorized"}`, http.StatusUnauthorized)
			return
		}
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		got[r.URL.Path] = string(b)
		mu.Unlock()
		w.WriteHeader(http.StatusOK)
	}))
	defer srv.Close()
	skus, err := ParseSKUs("rp-50:2000:50,rp-100:1000:100")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2027, 2, 10, 11, 59, 57, 0, time.UTC)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	made, err := Run(ctx, Config{Admin: srv.URL, Token: "s3cret", Campaign: "cny-2027", BusinessLine: "payments",
		BLBudget: 250000, SKUs: skus, PerUserLimit: 1, StartsIn: 3 * time.Second, Duration: 10 * time.Minute,
		VoucherTTL: 72 * time.Hour, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	if made.Body.Budget != 200000 {
		t.Errorf("default budget %d, want the stock's face value 200000", made.Body.Budget)
	}
	if got["/admin/v1/business-lines/payments"] != `{"budget":250000}` {
		t.Errorf("business line body %q", got["/admin/v1/business-lines/payments"])
	}
	cp, err := catalog.DecodeCampaign("cny-2027", []byte(got["/admin/v1/campaigns/cny-2027"]))
	if err != nil {
		t.Fatalf("the catalog refuses setup's campaign body: %v\n%s", err, got["/admin/v1/campaigns/cny-2027"])
	}
	if !cp.StartsAt.Equal(now.Add(3*time.Second)) || !cp.EndsAt.Equal(now.Add(3*time.Second+10*time.Minute)) ||
		len(cp.SKUs) != 2 || cp.SKUs[1].Stock != 1000 || cp.BusinessLine != "payments" || cp.Segment != nil {
		t.Errorf("decoded campaign %+v", cp)
	}

	// A refusal is an error that says what to do.
	_, err = Run(ctx, Config{Admin: srv.URL, Campaign: "c", BusinessLine: "b", SKUs: skus, PerUserLimit: 1,
		Duration: time.Minute, VoucherTTL: time.Hour})
	if err == nil || !strings.Contains(err.Error(), "401") || !strings.Contains(err.Error(), "FLASH_ADMIN_TOKEN") {
		t.Errorf("got %v, want a 401 naming FLASH_ADMIN_TOKEN", err)
	}
}

func TestBadInputNamesTheField(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"rp-50:2000", "sku:stock:value"},
		{"rp 50:1:1", "sku must be"},
		{"a:1:1,a:2:2", "twice"},
		{"a:-1:5", "stock"},
		{"a:1:0", "value"},
		{"", "at least one"},
	} {
		if _, err := ParseSKUs(tc.in); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseSKUs(%q) = %v, want an error with %q", tc.in, err, tc.want)
		}
	}
	skus, _ := ParseSKUs("a:1:1")
	ok := Config{Admin: "http://127.0.0.1:1", Campaign: "c", BusinessLine: "b", SKUs: skus, PerUserLimit: 1,
		Duration: time.Minute, VoucherTTL: time.Hour}
	for _, tc := range []struct {
		mut  func(*Config)
		want string
	}{
		{func(c *Config) { c.Admin = "127.0.0.1:8081" }, "admin"},
		{func(c *Config) { c.Campaign = "" }, "campaign"},
		{func(c *Config) { c.BusinessLine = "a/b" }, "business-line"},
		{func(c *Config) { c.PerUserLimit = 0 }, "per-user-limit"},
		{func(c *Config) { c.Duration = 0 }, "duration"},
		{func(c *Config) { c.VoucherTTL = 0 }, "voucher-ttl"},
	} {
		c := ok
		tc.mut(&c)
		if _, err := Run(context.Background(), c); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("got %v, want an error naming %s", err, tc.want)
		}
	}
}
