package admin_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/flashgate/flashgate/gateway/admin"
	"github.com/flashgate/flashgate/internal/testenv"
)

const (
	opsToken  = "ops-token-0123456789abcdefghijklmnopqr"
	riskToken = "risk-token-0123456789abcdefghijklmnopq"
)

func named() []admin.NamedToken {
	return []admin.NamedToken{{Name: "ops-alice", Token: opsToken}, {Name: "risk-bob", Token: riskToken}}
}

// doH is do with extra request headers (pairs).
func (e *env) doH(t *testing.T, method, path, body string, headers ...string) reply {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, e.url+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return reply{resp.StatusCode, resp.Header, string(b)}
}

func TestParseTokens(t *testing.T) {
	got, err := admin.ParseTokens(" ops-alice:" + opsToken + ", risk-bob:" + riskToken + ",")
	if err != nil || len(got) != 2 || got[0].Name != "ops-alice" || got[1].Token != riskToken {
		t.Fatalf("ParseTokens: %v %v", got, err)
	}
	for _, tc := range []struct{ in, want string }{
		{"ops-alice:short-token", `"ops-alice"`},
		{"ops-alice:" + opsToken + ",ops-alice:" + riskToken, "twice"},
		{"a:" + opsToken + ",b:" + opsToken, "same token"},
		{opsToken, "entry 1"},
		{"bad name!:" + opsToken, "name"},
	} {
		_, err := admin.ParseTokens(tc.in)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseTokens(%q) = %v; want an error naming %s", tc.in, err, tc.want)
		}
		if err != nil && (strings.Contains(err.Error(), opsToken) || strings.Contains(err.Error(), "short-token")) {
			t.Errorf("error %q shows a token", err)
		}
	}
}

// Only admin tokens authenticate the admin API: a partner key (X-Partner-Key, or sent
// as a bearer token), a user's JWT or a near miss are 401 and reach nothing.
func TestOnlyAdminTokensAct(t *testing.T) {
	e := start(t, admin.Config{Addr: "0.0.0.0:8081", Tokens: named(), Audit: testenv.PG(t)})
	bl := testenv.ID(t, "bl")
	put := `{"budget":1000}`
	for _, h := range [][]string{
		{"X-Partner-Key", "pk_live_0123456789abcdefghijklmnopqrstuv"},
		{"Authorization", "Bearer pk_live_0123456789abcdefghijklmnopqrstuv"},
		{"Authorization", "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1LTEiLCJleHAiOjk5OTk5OTk5OTl9.c2ln"},
		{"Authorization", "Bearer " + opsToken[:len(opsToken)-1]},
		{"Authorization", "Basic " + opsToken},
		{"X-Partner-Key", opsToken}, // an admin token in the partner header is not used as one
	} {
		for _, m := range []struct{ method, path, body string }{
			{"PUT", "/admin/v1/business-lines/" + bl, put},
			{"GET", "/admin/v1/audit", ""},
			{"GET", "/metrics", ""},
			{"GET", "/debug/pprof/", ""},
		} {
			if r := e.doH(t, m.method, m.path, m.body, h...); r.status != 401 {
				t.Errorf("%s %s with %s: %d %s; want 401", m.method, m.path, h[0], r.status, r.body)
			}
		}
	}
	var n int
	if err := e.pg.QueryRow(context.Background(), `SELECT count(*) FROM business_lines WHERE id = $1`, bl).Scan(&n); err != nil || n != 0 {
		t.Fatalf("business line written by a non-admin: %d %v", n, err)
	}
	// /healthz and /readyz stay open for load balancers.
	if r := e.doH(t, "GET", "/healthz", ""); r.status != 200 {
		t.Errorf("/healthz: %d", r.status)
	}
	if r := e.doH(t, "GET", "/metrics", "", "Authorization", "Bearer "+riskToken); r.status != 200 {
		t.Errorf("/metrics with a token on a non-loopback listener: %d", r.status)
	}
	// On a loopback listener /metrics needs no token (Prometheus on the same host).
	lo := start(t, admin.Config{Tokens: named()})
	if r := lo.doH(t, "GET", "/metrics", ""); r.status != 200 {
		t.Errorf("/metrics on loopback: %d", r.status)
	}
}

// A browser page of another origin cannot change anything, even with the token (a
// cookie-less CSRF needs the token, but a DNS-rebinding page against a token-less
// loopback listener does not).
func TestCrossSiteRefused(t *testing.T) {
	for _, cfg := range []admin.Config{{Tokens: named()}, {}} {
		e := start(t, cfg)
		auth := []string{}
		if len(cfg.Tokens) > 0 {
			auth = []string{"Authorization", "Bearer " + opsToken}
		}
		bl := testenv.ID(t, "bl")
		host := strings.TrimPrefix(e.url, "http://")
		for _, h := range [][]string{
			{"Origin", "https://evil.example"},
			{"Origin", "null"},
			{"Origin", "http://" + host + ".evil.example"},
			{"Sec-Fetch-Site", "cross-site"},
		} {
			r := e.doH(t, "PUT", "/admin/v1/business-lines/"+bl, `{"budget":5}`, append(auth, h...)...)
			if r.status != 403 || !strings.Contains(r.body, `"cross_site"`) {
				t.Errorf("PUT with %s: %q: %d %s; want 403 cross_site", h[0], h[1], r.status, r.body)
			}
		}
		var n int
		if err := e.pg.QueryRow(context.Background(), `SELECT count(*) FROM business_lines WHERE id = $1`, bl).Scan(&n); err != nil || n != 0 {
			t.Fatalf("cross-site PUT changed the business line: %d %v", n, err)
		}
		// The same origin (the admin console's own page) and clients without Origin pass.
		if r := e.doH(t, "PUT", "/admin/v1/business-lines/"+bl, `{"budget":5}`, append(auth, "Origin", "http://"+host)...); r.status != 200 {
			t.Errorf("same-origin PUT: %d %s", r.status, r.body)
		}
		if r := e.doH(t, "GET", "/admin/v1/campaigns/nope", "", append(auth, "Origin", "https://evil.example")...); r.status != 404 {
			t.Errorf("cross-site GET: %d %s; want the route's own answer (reads change nothing)", r.status, r.body)
		}
	}
}

// Every change made through the admin API is audited with the token's name, and
// GET /admin/v1/audit reads it back, filtered.
func TestAdminChangesAudited(t *testing.T) {
	e := start(t, admin.Config{Tokens: named(), Audit: testenv.PG(t)})
	bl := testenv.ID(t, "bl")
	alice := []string{"Authorization", "Bearer " + opsToken}
	bob := []string{"Authorization", "Bearer " + riskToken}
	if r := e.doH(t, "PUT", "/admin/v1/business-lines/"+bl, `{"budget":1000}`, alice...); r.status != 200 {
		t.Fatalf("PUT: %d %s", r.status, r.body)
	}
	if r := e.doH(t, "PUT", "/admin/v1/business-lines/"+bl, `{"budget":2500}`, bob...); r.status != 200 {
		t.Fatalf("PUT: %d %s", r.status, r.body)
	}
	// A refused change is not a change: no row.
	if r := e.doH(t, "PUT", "/admin/v1/business-lines/"+bl, `{"budget":-1}`, bob...); r.status != 400 {
		t.Fatalf("bad PUT: %d %s", r.status, r.body)
	}
	r := e.doH(t, "GET", "/admin/v1/audit?since=1h&limit=50&scope=business_line:"+bl, "", alice...)
	if r.status != 200 {
		t.Fatalf("GET audit: %d %s", r.status, r.body)
	}
	rows, _ := r.json(t)["rows"].([]any)
	if len(rows) != 2 {
		t.Fatalf("audit rows for %s: %s; want 2", bl, r.body)
	}
	first, second := rows[0].(map[string]any), rows[1].(map[string]any)
	if first["actor"] != "ops-alice" || first["action"] != "admin.business_line" || len(first["old"].(map[string]any)) != 0 ||
		first["new"].(map[string]any)["budget"] != "1000" {
		t.Errorf("first row: %v", first)
	}
	if second["actor"] != "risk-bob" || second["old"].(map[string]any)["budget"] != "1000" || second["new"].(map[string]any)["budget"] != "2500" {
		t.Errorf("second row: %v", second)
	}
	if at, err := time.Parse(time.RFC3339Nano, second["at"].(string)); err != nil || time.Since(at) > time.Minute {
		t.Errorf("second row's time: %v %v", second["at"], err)
	}
	r = e.doH(t, "GET", "/admin/v1/audit?since=1h&actor=risk-bob&scope=business_line:"+bl, "", alice...)
	if rows, _ := r.json(t)["rows"].([]any); len(rows) != 1 {
		t.Errorf("actor filter: %s; want bob's one row", r.body)
	}
	if r := e.doH(t, "GET", "/admin/v1/audit?limit=0", "", alice...); r.status != 400 || !strings.Contains(r.body, "limit") {
		t.Errorf("limit=0: %d %s; want 400 naming limit", r.status, r.body)
	}
	if r := e.doH(t, "GET", "/admin/v1/audit?since=yesterday", "", alice...); r.status != 400 || !strings.Contains(r.body, "since") {
		t.Errorf("since=yesterday: %d %s; want 400 naming since", r.status, r.body)
	}
}
