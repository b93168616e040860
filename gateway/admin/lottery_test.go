package admin_test

import (
	"strings"
	"testing"
	"time"

	"github.com/flashgate/flashgate/gateway/admin"
	"github.com/flashgate/flashgate/internal/testenv"
)

// POST /admin/v1/claims/{id}/delivery/retry makes a dead-lettered prize due again,
// audited with the acting name; a delivery that is not failed is 409, a claim without
// one 404, and neither is audited.
func TestDeliveryRetryRoute(t *testing.T) {
	rdb, pg := testenv.Redis(t), testenv.PG(t)
	e := start(t, admin.Config{Tokens: named(), Audit: pg})
	ctx := testenv.Ctx(t, 30*time.Second)
	c, recs := testenv.DurableCampaign(t, rdb, pg, 2)
	if _, err := pg.Exec(ctx, `UPDATE campaign_skus SET delivery_webhook = 'http://127.0.0.1:9/prizes' WHERE campaign_id = $1`, c.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := testenv.SettleOutbox(ctx, rdb, pg, c.ID); err != nil {
		t.Fatal(err)
	}
	failed, live := recs[0].ClaimID, recs[1].ClaimID
	if _, err := pg.Exec(ctx, `UPDATE deliveries SET state = 'failed', failed_at = now(), attempts = 8 WHERE claim_id = $1`, failed); err != nil {
		t.Fatal(err)
	}
	alice := []string{"Authorization", "Bearer " + opsToken}
	r := e.doH(t, "POST", "/admin/v1/claims/"+failed+"/delivery/retry", "", alice...)
	if r.status != 200 || !strings.Contains(r.body, `"state":"delivering"`) || !strings.Contains(r.body, `"attempts":0`) {
		t.Fatalf("retry of a failed delivery: %d %s", r.status, r.body)
	}
	var st string
	pg.QueryRow(ctx, `SELECT state FROM deliveries WHERE claim_id = $1`, failed).Scan(&st)
	if st != "delivering" {
		t.Fatalf("state after the retry %q", st)
	}
	if r := e.doH(t, "POST", "/admin/v1/claims/"+live+"/delivery/retry", "", alice...); r.status != 409 || !strings.Contains(r.body, "not_failed") {
		t.Fatalf("retry of a delivering delivery: %d %s, want 409 not_failed", r.status, r.body)
	}
	if r := e.doH(t, "POST", "/admin/v1/claims/"+c.ID+".nope/delivery/retry", "", alice...); r.status != 404 {
		t.Fatalf("retry of an unknown claim: %d %s, want 404", r.status, r.body)
	}
	if r := e.doH(t, "GET", "/admin/v1/claims/"+failed+"/delivery/retry", "", alice...); r.status != 405 {
		t.Fatalf("GET of the retry route: %d, want 405", r.status)
	}
	a := e.doH(t, "GET", "/admin/v1/audit?since=1h&scope=claim:"+failed, "", alice...)
	rows, _ := a.json(t)["rows"].([]any)
	if len(rows) != 1 {
		t.Fatalf("audit of the retry: %s; want one row", a.body)
	}
	row := rows[0].(map[string]any)
	if row["actor"] != "ops-alice" || row["action"] != "admin.delivery_retry" ||
		row["old"].(map[string]any)["state"] != "failed" || row["new"].(map[string]any)["state"] != "delivering" {
		t.Fatalf("audit row %v", row)
	}
	for _, id := range []string{live, c.ID + ".nope"} {
		a := e.doH(t, "GET", "/admin/v1/audit?since=1h&scope=claim:"+id, "", alice...)
		if rows, _ := a.json(t)["rows"].([]any); len(rows) != 0 {
			t.Errorf("a refused retry of %s was audited: %s", id, a.body)
		}
	}
}
