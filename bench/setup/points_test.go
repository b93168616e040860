package setup

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flashgate/flashgate/internal/catalog"
)

// The points mall model: the campaign is points_item with every SKU at the price (a body
// the catalog accepts), a task is registered, and each of the users u-0 .. u-N-1 is
// granted price x per-user-limit points with the task's key; bad model flags are refused.
func TestSetupPointsMall(t *testing.T) {
	var mu sync.Mutex
	var campaign string
	grants := map[string]int64{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		defer mu.Unlock()
		switch {
		case r.Method == http.MethodPut && strings.HasPrefix(r.URL.Path, "/admin/v1/campaigns/"):
			campaign = string(b)
		case r.Method == http.MethodPut && strings.HasPrefix(r.URL.Path, "/admin/v1/points/tasks/"):
			_, _ = w.Write([]byte(`{"task":"t","key":"fgt_k"}`))
			return
		case r.Method == http.MethodPost && r.URL.Path == "/v1/points/grants":
			var g struct {
				UserID string `json:"user_id"`
				Amount int64  `json:"amount"`
			}
			if r.Header.Get("X-Source-Key") != "fgt_k" || json.Unmarshal(b, &g) != nil {
				http.Error(w, `{"error":"bad"}`, http.StatusUnauthorized)
				return
			}
			grants[g.UserID] += g.Amount
		}
		w.WriteHeader(http.StatusOK)
	}))
	defer srv.Close()
	skus, _ := ParseSKUs("item:100:1")
	cfg := Config{Admin: srv.URL, Campaign: "mall", BusinessLine: "bl", SKUs: skus, PerUserLimit: 2,
		Duration: time.Minute, VoucherTTL: time.Hour, Points: Points{Price: 500, Users: 50, Public: srv.URL}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	made, err := Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := catalog.DecodeCampaign("mall", []byte(campaign)); err != nil {
		t.Fatalf("the catalog refuses the points campaign: %v\n%s", err, campaign)
	}
	if !strings.Contains(campaign, `"kind":"points_item"`) || !strings.Contains(campaign, `"points":500`) {
		t.Fatalf("campaign body %s", campaign)
	}
	if len(grants) != 50 || grants["u-0"] != 1000 || grants["u-49"] != 1000 || made.PointsFunded != 50 {
		t.Fatalf("grants %d users (u-0 %d), funded %d; want 50 users of 1000", len(grants), grants["u-0"], made.PointsFunded)
	}
	for _, bad := range []Points{{Price: -1, Users: 1, Public: srv.URL}, {Price: 5, Users: 0, Public: srv.URL}, {Price: 5, Users: 1, Public: "nope"}} {
		c := cfg
		c.Points = bad
		if err := c.Validate(); err == nil {
			t.Errorf("points %+v accepted", bad)
		}
	}
}
