package admin_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/flashgate/flashgate/gateway/admin"
	"github.com/flashgate/flashgate/internal/reconcile"
	"github.com/flashgate/flashgate/internal/recovery"
	"github.com/flashgate/flashgate/internal/rkeys"
	"github.com/flashgate/flashgate/internal/testenv"
)

// settledNow is the recoverer's wait for the settler when nothing of the test's
// campaign is in Kafka: there is nothing to wait for.
type settledNow struct{}

func (settledNow) Wait(context.Context) error { return nil }

// withReconciler serves an admin API whose reconciler can rebuild counters (a
// Recoverer restricted to the test's business line, so it touches nothing else on the
// shared stack).
func withReconciler(t *testing.T, bl string) *env {
	t.Helper()
	rdb, pg := testenv.Redis(t), testenv.PG(t)
	rec, err := recovery.New(recovery.Config{BusinessLines: []string{bl}}, rdb, pg, settledNow{}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := reconcile.New(reconcile.Config{}, reconcile.Deps{Redis: rdb, PG: pg, Recoverer: rec})
	if err != nil {
		t.Fatal(err)
	}
	return start(t, admin.Config{Token: token, Reconciler: rc})
}

func TestReconcileRoutes(t *testing.T) {
	bl := testenv.ID(t, "bl")
	e := withReconciler(t, bl)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if r := e.do(t, "PUT", "/admin/v1/business-lines/"+bl, token, `{"budget":1000000}`); r.status != 200 {
		t.Fatalf("business line: %d %s", r.status, r.body)
	}
	camp := testenv.ID(t, "camp")
	path := "/admin/v1/campaigns/" + camp
	if r := e.do(t, "PUT", path, token, campaignBody(bl, time.Hour, "")); r.status != 200 {
		t.Fatalf("PUT campaign: %d %s", r.status, r.body)
	}

	// warm stamps the server's run id, so a restart right after it is noticed.
	runID, err := recovery.RunID(ctx, e.rdb)
	if err != nil {
		t.Fatal(err)
	}
	if rid, _ := e.rdb.HGet(ctx, rkeys.Meta(camp), rkeys.FieldRunID).Result(); rid != runID {
		t.Errorf("meta %s = %q, want the server's run id %q", rkeys.FieldRunID, rid, runID)
	}

	// The campaign view carries the reconciler's report.
	r := e.do(t, "GET", path, token, "")
	var view struct {
		CampaignID     string           `json:"campaign_id"`
		Reconciliation reconcile.Report `json:"reconciliation"`
	}
	if r.status != 200 || json.Unmarshal([]byte(r.body), &view) != nil {
		t.Fatalf("GET campaign: %d %s", r.status, r.body)
	}
	if view.CampaignID != camp || view.Reconciliation.CampaignID != camp || view.Reconciliation.State != reconcile.StateInSync {
		t.Errorf("GET campaign reconciliation = %+v, want in_sync for %s", view.Reconciliation, camp)
	}

	check := func(method string) reconcile.Report {
		t.Helper()
		r := e.do(t, method, path+"/reconcile", token, "")
		var rep reconcile.Report
		if r.status != 200 || json.Unmarshal([]byte(r.body), &rep) != nil {
			t.Fatalf("%s reconcile: %d %s", method, r.status, r.body)
		}
		return rep
	}
	if rep := check("GET"); rep.State != reconcile.StateInSync || rep.Drift != 0 {
		t.Errorf("clean campaign: state %s drift %d, want in_sync 0", rep.State, rep.Drift)
	}

	// Inject a fault: Redis counts 3 claims of rp-50 that are nowhere (no row, nothing
	// in flight). The check reports exactly that, and changes nothing.
	sku := rkeys.SKU(camp, "rp-50")
	e.rdb.HIncrBy(ctx, sku, "taken", 3)
	e.rdb.HIncrBy(ctx, sku, "stock", -3)
	e.rdb.HIncrBy(ctx, rkeys.Meta(camp), "taken", 3)
	rep := check("GET")
	if rep.State != reconcile.StateDrift || rep.Drift != 3 {
		t.Fatalf("after injecting 3 phantom claims: state %s drift %d, want drift 3 (%+v)", rep.State, rep.Drift, rep)
	}
	if taken, _ := e.rdb.HGet(ctx, sku, "taken").Int64(); taken != 3 {
		t.Errorf("GET changed the counters: taken %d, want 3", taken)
	}

	// POST repairs: the business line is rebuilt from the books.
	rep = check("POST")
	if rep.State != reconcile.StateInSync || rep.Drift != 0 || rep.Rebuilt == nil || rep.Before == nil || rep.Before.Drift != 3 {
		t.Errorf("after repair: state %s drift %d rebuilt %v before %+v; want in_sync 0, rebuilt, before drift 3",
			rep.State, rep.Drift, rep.Rebuilt != nil, rep.Before)
	}
	if stock, _ := e.rdb.HGet(ctx, sku, "stock").Int64(); stock != 100 {
		t.Errorf("stock after repair %d, want 100", stock)
	}

	// Errors.
	if r := e.do(t, "GET", "/admin/v1/campaigns/"+testenv.ID(t, "nope")+"/reconcile", token, ""); r.status != 404 {
		t.Errorf("unknown campaign: %d %s, want 404", r.status, r.body)
	}
	if r := e.do(t, "PUT", path+"/reconcile", token, ""); r.status != 405 || !strings.Contains(r.header.Get("Allow"), "POST") {
		t.Errorf("PUT reconcile: %d Allow %q, want 405 naming POST", r.status, r.header.Get("Allow"))
	}
	if r := e.do(t, "GET", path+"/reconcile", "", ""); r.status != 401 {
		t.Errorf("no token: %d, want 401", r.status)
	}
	// Without a reconciler the route does not exist.
	plain := start(t, admin.Config{Token: token})
	if r := plain.do(t, "GET", path+"/reconcile", token, ""); r.status != 404 {
		t.Errorf("no reconciler: %d, want 404", r.status)
	}
}

func TestReportRoute(t *testing.T) {
	e := start(t, admin.Config{Token: token})
	bl := testenv.ID(t, "bl")
	if r := e.do(t, "PUT", "/admin/v1/business-lines/"+bl, token, `{"budget":1000000}`); r.status != 200 {
		t.Fatalf("business line: %d %s", r.status, r.body)
	}
	camp := testenv.ID(t, "camp")
	path := "/admin/v1/campaigns/" + camp + "/report"
	if r := e.do(t, "PUT", "/admin/v1/campaigns/"+camp, token, campaignBody(bl, time.Hour, "")); r.status != 200 {
		t.Fatalf("PUT campaign: %d %s", r.status, r.body)
	}

	r := e.do(t, "GET", path, token, "")
	var rep struct {
		CampaignID string `json:"campaign_id"`
		SKUs       []struct {
			SKU    string `json:"sku"`
			Stock  int64  `json:"stock"`
			Issued int64  `json:"issued"`
		} `json:"skus"`
	}
	if r.status != 200 || !strings.HasPrefix(r.header.Get("Content-Type"), "application/json") || json.Unmarshal([]byte(r.body), &rep) != nil {
		t.Fatalf("GET report: %d %s %s", r.status, r.header.Get("Content-Type"), r.body)
	}
	if rep.CampaignID != camp || len(rep.SKUs) != 2 || rep.SKUs[0].Issued != 0 {
		t.Errorf("report %+v, want 2 SKUs, nothing issued", rep)
	}

	csvWant := "segment,sku,value,stock,issued,redeemed,expired,outstanding,users,redemption_rate,budget_spent,budget_recovered,net_spent\n"
	for _, tc := range []struct{ name, query, accept string }{
		{"format=csv", "?format=csv", ""},
		{"Accept", "", "text/csv"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			r := e.doHeader(t, ctx, "GET", path+tc.query, map[string]string{"Accept": tc.accept})
			if r.status != 200 || !strings.HasPrefix(r.header.Get("Content-Type"), "text/csv") {
				t.Fatalf("CSV report: %d %s", r.status, r.header.Get("Content-Type"))
			}
			if !strings.HasPrefix(r.body, csvWant) || strings.Count(r.body, "\n") != 4 { // header, 2 SKUs, total
				t.Errorf("CSV report:\n%s", r.body)
			}
		})
	}
	if r := e.do(t, "GET", path+"?format=xml", token, ""); r.status != 400 || !strings.Contains(r.body, "format") {
		t.Errorf("format=xml: %d %s, want 400 naming format", r.status, r.body)
	}
	if r := e.do(t, "GET", "/admin/v1/campaigns/"+testenv.ID(t, "nope")+"/report", token, ""); r.status != 404 {
		t.Errorf("unknown campaign: %d, want 404", r.status)
	}
	if r := e.do(t, "POST", path, token, ""); r.status != 405 {
		t.Errorf("POST report: %d, want 405", r.status)
	}
}

// doHeader sends an authorized GET-like request with extra headers.
func (e *env) doHeader(t *testing.T, ctx context.Context, method, path string, h map[string]string) reply {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, method, e.url+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	for k, v := range h {
		if v != "" {
			req.Header.Set(k, v)
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return reply{resp.StatusCode, resp.Header, string(b)}
}
