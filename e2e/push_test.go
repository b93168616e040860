package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/flashgate/flashgate/internal/testenv"
)

// TestPushRoutesThroughGateway: the push routes of a real gateway binary. PUT makes a
// push (202) over two tiers, the same PUT answers the push as it is (200), another body
// on the same push_id is 409 naming tiers, a bad push_id or unknown segment is 400 naming
// it; GET reads the progress until done, every user issued once, and after settlement
// one row per user on channel push:<id>; the push is audited as admin.push.
func TestPushRoutesThroughGateway(t *testing.T) {
	s := start(t, opts{})
	bl := s.businessLine(100_000_000)
	camp := s.campaign(bl, 10_000_000, 1, sku{SKU: "gold", Stock: 100, Value: 20}, sku{SKU: "silver", Stock: 100, Value: 10})
	const perTier = 40
	tiers := map[string]string{}
	for _, skuID := range []string{"gold", "silver"} {
		seg := testenv.ID(t, "tier-"+skuID)
		var b strings.Builder
		for i := 0; i < perTier; i++ {
			fmt.Fprintf(&b, "%s-u%03d\n", seg, i)
		}
		if code, body := s.adminText("PUT", "/admin/v1/segments/"+seg, b.String()); code != 200 {
			t.Fatalf("segment: %d %s", code, body)
		}
		tiers[seg] = skuID
	}
	pushID := testenv.ID(t, "push")
	path := "/admin/v1/campaigns/" + camp + "/pushes/" + pushID
	body := map[string]any{"tiers": tiers}

	// Bad input first: nothing is made.
	if code, b := s.adminDo("PUT", "/admin/v1/campaigns/"+camp+"/pushes/bad*id", body); code != 400 || !strings.Contains(string(b), "push_id") {
		t.Errorf("bad push_id: %d %s", code, b)
	}
	if code, b := s.adminDo("PUT", path, map[string]any{"tiers": map[string]string{"no-such-segment": "gold"}}); code != 400 ||
		!strings.Contains(string(b), "tiers.no-such-segment") {
		t.Errorf("unknown segment: %d %s", code, b)
	}
	if code, b := s.adminDo("GET", path, nil); code != 404 {
		t.Errorf("GET after bad input: %d %s; want 404 (nothing made)", code, b)
	}

	if code, b := s.adminDo("PUT", path, body); code != 202 {
		t.Fatalf("PUT push: %d %s", code, b)
	}
	if code, b := s.adminDo("PUT", path, body); code != 200 {
		t.Errorf("same PUT again: %d %s", code, b)
	}
	var other map[string]string
	for seg := range tiers {
		other = map[string]string{seg: "gold"}
		break
	}
	if code, b := s.adminDo("PUT", path, map[string]any{"tiers": other}); code != 409 || !strings.Contains(string(b), `"tiers"`) {
		t.Errorf("other body, same push_id: %d %s", code, b)
	}
	var p struct {
		State string `json:"state"`
		Users struct {
			Total, Issued, Pending int64
			Refused                map[string]int64
		} `json:"users"`
	}
	testenv.Eventually(t, 60*time.Second, "push done", func() bool {
		code, b := s.adminDo("GET", path, nil)
		return code == 200 && json.Unmarshal(b, &p) == nil && p.State == "done"
	})
	if p.Users.Total != 2*perTier || p.Users.Issued != 2*perTier || len(p.Users.Refused) != 0 {
		t.Fatalf("progress %+v", p)
	}
	if n := s.settled(camp, 60*time.Second); n != 2*perTier {
		t.Fatalf("%d rows, want %d", n, 2*perTier)
	}
	var rows, users int64
	if err := s.pg.QueryRow(context.Background(), `SELECT count(*), count(DISTINCT user_id) FROM claims
		WHERE campaign_id = $1 AND channel = $2`, camp, "push:"+pushID).Scan(&rows, &users); err != nil {
		t.Fatal(err)
	}
	if rows != 2*perTier || users != 2*perTier {
		t.Errorf("push rows %d for %d users, want %d each", rows, users, 2*perTier)
	}
	var audited int
	if err := s.pg.QueryRow(context.Background(), `SELECT count(*) FROM risk_audit WHERE action = 'admin.push' AND scope = $1`,
		"push:"+camp+"/"+pushID).Scan(&audited); err != nil || audited != 1 {
		t.Errorf("admin.push audit rows %d, %v; want 1", audited, err)
	}
}
