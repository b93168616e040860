package admin_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/valyala/fasthttp"

	"github.com/flashgate/flashgate/gateway/admin"
	"github.com/flashgate/flashgate/internal/catalog"
	"github.com/flashgate/flashgate/internal/rkeys"
	"github.com/flashgate/flashgate/internal/testenv"
)

const token = "s3cret-admin-token"

type env struct {
	s   *admin.Server
	url string
	rdb *redis.Client
	pg  *pgxpool.Pool
}

// start serves an admin API on a loopback port against the real dev stack.
func start(t *testing.T, cfg admin.Config) *env {
	t.Helper()
	rdb, pg := testenv.Redis(t), testenv.PG(t)
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	s, err := admin.New(cfg, catalog.New(pg, rdb), nil)
	if err != nil {
		t.Fatalf("admin.New: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &fasthttp.Server{Handler: s.Handler, MaxRequestBodySize: admin.MaxBodyBytes}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Shutdown() })
	return &env{s: s, url: "http://" + ln.Addr().String(), rdb: rdb, pg: pg}
}

type reply struct {
	status int
	header http.Header
	body   string
}

func (r reply) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(r.body), &m); err != nil {
		t.Fatalf("body %q is not a JSON object: %v", r.body, err)
	}
	return m
}

// do sends one request; tok "" sends no Authorization header.
func (e *env) do(t *testing.T, method, path, tok, body string) reply {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, e.url+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return reply{resp.StatusCode, resp.Header, string(b)}
}

func TestNewLoopbackRule(t *testing.T) {
	rdb, pg := testenv.Redis(t), testenv.PG(t)
	cat := catalog.New(pg, rdb)
	tests := []struct {
		addr, token string
		wantErr     string // substring; "" = accepted
	}{
		{"127.0.0.1:8081", "", ""},
		{"127.9.9.9:8081", "", ""},
		{"[::1]:8081", "", ""},
		{"localhost:8081", "", ""},
		{"LOCALHOST:8081", "", ""},
		{"[::ffff:127.0.0.1]:8081", "", ""},
		{"0.0.0.0:8081", "", "FLASH_ADMIN_ADDR"},
		{":8081", "", "FLASH_ADMIN_ADDR"},
		{"[::]:8081", "", "FLASH_ADMIN_ADDR"},
		{"10.1.2.3:8081", "", "FLASH_ADMIN_ADDR"},
		{"admin.example.com:8081", "", "FLASH_ADMIN_ADDR"},
		{"0.0.0.0:8081", token, ""},
		{":8081", token, ""},
		{"", token, "FLASH_ADMIN_ADDR"},
		{"127.0.0.1", "", "FLASH_ADMIN_ADDR"},
	}
	for _, tc := range tests {
		_, err := admin.New(admin.Config{Addr: tc.addr, Token: tc.token}, cat, nil)
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("New(addr %q, token %v) = %v; want accepted", tc.addr, tc.token != "", err)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("New(addr %q, token %v) = %v; want an error naming %s", tc.addr, tc.token != "", err, tc.wantErr)
		}
		if err != nil && strings.Contains(err.Error(), token) {
			t.Errorf("error %q shows the token", err)
		}
	}
	if _, err := admin.New(admin.Config{Addr: "127.0.0.1:1"}, nil, nil); err == nil {
		t.Error("New without a catalog: want an error")
	}
	if _, err := admin.New(admin.Config{Addr: "127.0.0.1:1", Checks: []admin.Check{{Name: "x"}}}, cat, nil); err == nil {
		t.Error("New with a check without Ping: want an error")
	}
}

func TestToken(t *testing.T) {
	e := start(t, admin.Config{Token: token})
	bl := testenv.ID(t, "bl")
	path := "/admin/v1/business-lines/" + bl
	tests := []struct {
		name   string
		header string // the whole Authorization header; "" = none
		want   int
	}{
		{"missing", "", 401},
		{"wrong", "Bearer not-the-token", 401},
		{"prefix of the token", "Bearer " + token[:5], 401},
		{"token plus more", "Bearer " + token + "x", 401},
		{"no scheme", token, 401},
		{"basic scheme", "Basic " + token, 401},
		{"empty bearer", "Bearer ", 401},
		{"right", "Bearer " + token, 200},
		{"scheme is case-insensitive", "bearer " + token, 200},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, "PUT", e.url+path, strings.NewReader(`{"budget":100}`))
			if tc.header != "" {
				req.Header.Set("Authorization", tc.header)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Fatalf("status %d (%s); want %d", resp.StatusCode, b, tc.want)
			}
			if tc.want == 401 {
				if resp.Header.Get("WWW-Authenticate") == "" || !strings.Contains(string(b), `"unauthorized"`) {
					t.Errorf("401 without WWW-Authenticate or error body: %q", b)
				}
				if strings.Contains(string(b), token) {
					t.Errorf("401 body shows the token")
				}
			}
		})
	}
	// Nothing unauthenticated reached the catalog: only the two authorized PUTs did, so
	// the line exists now; a line only refused must not exist.
	other := testenv.ID(t, "bl")
	if r := e.do(t, "PUT", "/admin/v1/business-lines/"+other, "wrong", `{"budget":1}`); r.status != 401 {
		t.Fatalf("wrong token: %d", r.status)
	}
	var n int
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := e.pg.QueryRow(ctx, `SELECT count(*) FROM business_lines WHERE id = $1`, other).Scan(&n); err != nil || n != 0 {
		t.Errorf("business line written without a valid token: count %d err %v", n, err)
	}
	// Routes are not revealed without a token, and health needs none.
	if r := e.do(t, "GET", "/admin/v1/no-such-route", "", ""); r.status != 401 {
		t.Errorf("unknown admin route without token: %d; want 401", r.status)
	}
	if r := e.do(t, "GET", "/admin/v1/no-such-route", token, ""); r.status != 404 {
		t.Errorf("unknown admin route with token: %d; want 404", r.status)
	}
	for _, p := range []string{"/healthz", "/readyz", "/metrics"} {
		if r := e.do(t, "GET", p, "", ""); r.status != 200 {
			t.Errorf("GET %s without a token: %d %s; want 200", p, r.status, r.body)
		}
	}
}

func TestBusinessLine(t *testing.T) {
	e := start(t, admin.Config{Token: token})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	bl := testenv.ID(t, "bl")
	path := "/admin/v1/business-lines/" + bl

	r := e.do(t, "PUT", path, token, `{"budget":5000}`)
	if r.status != 200 {
		t.Fatalf("PUT: %d %s", r.status, r.body)
	}
	if m := r.json(t); m["business_line"] != bl || m["budget"] != float64(5000) {
		t.Errorf("PUT answer %v", m)
	}
	check := func(wantBudget string) {
		t.Helper()
		got, err := e.rdb.HGet(ctx, rkeys.BusinessLine(bl), "budget").Result()
		if err != nil || got != wantBudget {
			t.Errorf("redis budget = %q, %v; want %s", got, err, wantBudget)
		}
		var pgBudget int64
		if err := e.pg.QueryRow(ctx, `SELECT budget FROM business_lines WHERE id = $1`, bl).Scan(&pgBudget); err != nil || fmt.Sprint(pgBudget) != wantBudget {
			t.Errorf("postgres budget = %d, %v; want %s", pgBudget, err, wantBudget)
		}
	}
	check("5000")
	if r := e.do(t, "PUT", path, token, `{"budget":7000}`); r.status != 200 {
		t.Fatalf("PUT again: %d %s", r.status, r.body)
	}
	check("7000")

	bad := []struct {
		name, path, body, wantMsg string
	}{
		{"not JSON", path, `budget=1`, "body: "},
		{"empty body", path, ``, "body: "},
		{"missing budget", path, `{}`, "budget: required"},
		{"null budget", path, `{"budget":null}`, "budget: required"},
		{"negative", path, `{"budget":-1}`, "budget: must not be negative"},
		{"string", path, `{"budget":"100"}`, "budget: must be a int64"},
		{"fraction", path, `{"budget":1.5}`, "budget: must be a int64"},
		{"unknown field", path, `{"budget":1,"currency":"CNY"}`, "currency: unknown field"},
		{"trailing data", path, `{"budget":1} {}`, "body: unexpected data after the JSON object"},
		{"array", path, `[1]`, "body: "},
		{"bad id", "/admin/v1/business-lines/a*b", `{"budget":1}`, "id: must be 1-64 characters"},
		{"long id", "/admin/v1/business-lines/" + strings.Repeat("b", 65), `{"budget":1}`, "id: must be 1-64 characters"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			r := e.do(t, "PUT", tc.path, token, tc.body)
			if r.status != 400 {
				t.Fatalf("status %d %s; want 400", r.status, r.body)
			}
			m := r.json(t)
			if m["error"] != "invalid_request" || !strings.HasPrefix(fmt.Sprint(m["message"]), tc.wantMsg) {
				t.Errorf("body %s; want invalid_request with message starting %q", r.body, tc.wantMsg)
			}
		})
	}
	check("7000") // bad input changed nothing

	if r := e.do(t, "GET", path, token, ""); r.status != 405 || r.header.Get("Allow") != "PUT" {
		t.Errorf("GET business line: %d Allow %q; want 405 Allow PUT", r.status, r.header.Get("Allow"))
	}
}

func campaignBody(bl string, startsIn time.Duration, extra string) string {
	starts := time.Now().Add(startsIn).UTC().Truncate(time.Second)
	return fmt.Sprintf(`{"name":"Spring red packets","business_line":%q,"starts_at":%q,"ends_at":%q,
		"per_user_limit":1,"budget":100000,"voucher_ttl":"72h","segment":null%s,
		"skus":[{"sku":"rp-50","stock":100,"value":50},{"sku":"rp-100","stock":10,"value":100}]}`,
		bl, starts.Format(time.RFC3339), starts.Add(time.Hour).Format(time.RFC3339), extra)
}

func TestCampaign(t *testing.T) {
	e := start(t, admin.Config{Token: token})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	bl := testenv.ID(t, "bl")
	if r := e.do(t, "PUT", "/admin/v1/business-lines/"+bl, token, `{"budget":1000000}`); r.status != 200 {
		t.Fatalf("business line: %d %s", r.status, r.body)
	}
	camp := testenv.ID(t, "camp")
	path := "/admin/v1/campaigns/" + camp

	r := e.do(t, "PUT", path, token, campaignBody(bl, time.Hour, ""))
	if r.status != 200 {
		t.Fatalf("PUT campaign: %d %s", r.status, r.body)
	}
	var f catalog.Figures
	if err := json.Unmarshal([]byte(r.body), &f); err != nil {
		t.Fatal(err)
	}
	if f.CampaignID != camp || len(f.SKUs) != 2 || f.Budget != 100000 || f.BudgetLeft != 100000 {
		t.Errorf("PUT answer %+v", f)
	}
	// Warmed: the claim script's view exists in Redis.
	if bl2, err := e.rdb.HGet(ctx, rkeys.Meta(camp), "bl").Result(); err != nil || bl2 != bl {
		t.Errorf("redis meta bl = %q, %v; want %s", bl2, err, bl)
	}
	if st, err := e.rdb.HGet(ctx, rkeys.SKU(camp, "rp-50"), "stock").Result(); err != nil || st != "100" {
		t.Errorf("redis stock = %q, %v; want 100", st, err)
	}

	r = e.do(t, "GET", path, token, "")
	if r.status != 200 {
		t.Fatalf("GET campaign: %d %s", r.status, r.body)
	}
	if err := json.Unmarshal([]byte(r.body), &f); err != nil {
		t.Fatal(err)
	}
	if f.Name != "Spring red packets" || f.BusinessLine != bl || f.SKUs[0].SKU != "rp-100" || f.SKUs[0].StockLeft != 10 ||
		f.SKUs[1].StockLeft != 100 || f.Reconciliation.State != "in_sync" || f.Rejections == nil {
		t.Errorf("GET figures %+v", f)
	}

	// A change before the start is allowed and re-warms.
	if r := e.do(t, "PUT", path, token, strings.Replace(campaignBody(bl, time.Hour, ""), `"stock":100`, `"stock":200`, 1)); r.status != 200 {
		t.Fatalf("PUT change: %d %s", r.status, r.body)
	}
	if st, _ := e.rdb.HGet(ctx, rkeys.SKU(camp, "rp-50"), "stock").Result(); st != "200" {
		t.Errorf("stock after change = %q; want 200", st)
	}

	bad := []struct{ name, body, wantMsg string }{
		{"not JSON", `{`, "body: "},
		{"unknown field", campaignBody(bl, time.Hour, `,"colour":"red"`), "colour: unknown field"},
		{"unknown business line", campaignBody("no-such-bl-"+camp, time.Hour, ""), "business_line: unknown business line"},
		{"bad business line id", campaignBody("a b", time.Hour, ""), "business_line: must be 1-64"},
		{"missing name", strings.Replace(campaignBody(bl, time.Hour, ""), `"Spring red packets"`, `""`, 1), "name: required"},
		{"ends before start", strings.Replace(campaignBody(bl, time.Hour, ""), `"per_user_limit":1`, `"per_user_limit":1,"ends_at":"2000-01-01T00:00:00Z"`, 1), "ends_at: must be after starts_at"},
		{"bad time", strings.Replace(campaignBody(bl, time.Hour, ""), `"per_user_limit":1`, `"per_user_limit":1,"starts_at":"tomorrow"`, 1), "starts_at/ends_at: must be an RFC 3339 time"},
		{"zero per-user limit", strings.Replace(campaignBody(bl, time.Hour, ""), `"per_user_limit":1`, `"per_user_limit":0`, 1), "per_user_limit: must be 1..1000000"},
		{"bad ttl", strings.Replace(campaignBody(bl, time.Hour, ""), `"72h"`, `"3 days"`, 1), "voucher_ttl: must be a duration"},
		{"string stock", strings.Replace(campaignBody(bl, time.Hour, ""), `"stock":100`, `"stock":"100"`, 1), "skus.stock: must be a int64"},
		{"zero value", strings.Replace(campaignBody(bl, time.Hour, ""), `"value":50`, `"value":0`, 1), "skus[0].value: must be 1.."},
		{"duplicate sku", strings.Replace(campaignBody(bl, time.Hour, ""), `"rp-100"`, `"rp-50"`, 1), "skus[1].sku: duplicate SKU"},
		{"no skus", strings.Replace(campaignBody(bl, time.Hour, ""), `"skus":[{"sku":"rp-50","stock":100,"value":50},{"sku":"rp-100","stock":10,"value":100}]`, `"skus":[]`, 1), "skus: at least one SKU"},
		{"unknown segment", campaignBody(bl, time.Hour, `,"segment":"no-such-seg-`+camp+`"`), "segment: unknown segment"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			r := e.do(t, "PUT", path, token, tc.body)
			if r.status != 400 {
				t.Fatalf("status %d %s; want 400", r.status, r.body)
			}
			m := r.json(t)
			if m["error"] != "invalid_request" || !strings.HasPrefix(fmt.Sprint(m["message"]), tc.wantMsg) {
				t.Errorf("body %s; want invalid_request with message starting %q", r.body, tc.wantMsg)
			}
		})
	}
	if st, _ := e.rdb.HGet(ctx, rkeys.SKU(camp, "rp-50"), "stock").Result(); st != "200" {
		t.Errorf("stock after bad input = %q; want 200 (unchanged)", st)
	}
	if r := e.do(t, "PUT", "/admin/v1/campaigns/bad*id", token, campaignBody(bl, time.Hour, "")); r.status != 400 || !strings.Contains(r.body, "id: must be") {
		t.Errorf("bad campaign id: %d %s; want 400 naming id", r.status, r.body)
	}

	// Started: a campaign already running cannot be changed.
	started := testenv.ID(t, "camp")
	if r := e.do(t, "PUT", "/admin/v1/campaigns/"+started, token, campaignBody(bl, -time.Minute, "")); r.status != 200 {
		t.Fatalf("PUT started campaign (first time): %d %s", r.status, r.body)
	}
	r = e.do(t, "PUT", "/admin/v1/campaigns/"+started, token, campaignBody(bl, time.Hour, ""))
	if r.status != 409 || r.json(t)["error"] != "campaign_started" || r.json(t)["field"] != "starts_at" {
		t.Errorf("change of a started campaign: %d %s; want 409 campaign_started naming starts_at", r.status, r.body)
	}

	if r := e.do(t, "GET", "/admin/v1/campaigns/"+testenv.ID(t, "none"), token, ""); r.status != 404 || r.body != `{"error":"not_found"}` {
		t.Errorf("GET unknown campaign: %d %s; want 404 not_found", r.status, r.body)
	}
	if r := e.do(t, "DELETE", path, token, ""); r.status != 405 || r.header.Get("Allow") != "GET, PUT" {
		t.Errorf("DELETE campaign: %d Allow %q; want 405 Allow GET, PUT", r.status, r.header.Get("Allow"))
	}
	if r := e.do(t, "GET", path+"/extra/parts", token, ""); r.status != 404 {
		t.Errorf("GET %s/extra/parts: %d; want 404", path, r.status)
	}
}

func TestPauseResume(t *testing.T) {
	e := start(t, admin.Config{Token: token})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	bl, camp := testenv.ID(t, "bl"), testenv.ID(t, "camp")
	if r := e.do(t, "PUT", "/admin/v1/business-lines/"+bl, token, `{"budget":1000}`); r.status != 200 {
		t.Fatal(r.body)
	}
	if r := e.do(t, "PUT", "/admin/v1/campaigns/"+camp, token, campaignBody(bl, time.Hour, "")); r.status != 200 {
		t.Fatal(r.body)
	}
	for _, step := range []struct {
		action, want string
		paused       bool
	}{{"pause", "1", true}, {"pause", "1", true}, {"resume", "0", false}, {"resume", "0", false}} {
		r := e.do(t, "POST", "/admin/v1/campaigns/"+camp+"/"+step.action, token, "")
		if r.status != 200 || r.json(t)["paused"] != step.paused {
			t.Fatalf("%s: %d %s", step.action, r.status, r.body)
		}
		if got, _ := e.rdb.HGet(ctx, rkeys.Meta(camp), "paused").Result(); got != step.want {
			t.Errorf("after %s: redis paused = %q; want %s", step.action, got, step.want)
		}
		var paused bool
		if err := e.pg.QueryRow(ctx, `SELECT paused FROM campaigns WHERE id = $1`, camp).Scan(&paused); err != nil || paused != step.paused {
			t.Errorf("after %s: postgres paused = %v, %v", step.action, paused, err)
		}
	}
	unknown := testenv.ID(t, "none")
	if r := e.do(t, "POST", "/admin/v1/campaigns/"+unknown+"/pause", token, ""); r.status != 404 {
		t.Errorf("pause unknown: %d %s; want 404", r.status, r.body)
	}
	if n, _ := e.rdb.Exists(ctx, rkeys.Meta(unknown)).Result(); n != 0 {
		t.Errorf("pausing an unknown campaign created its meta key")
	}
	if r := e.do(t, "POST", "/admin/v1/campaigns/bad*id/resume", token, ""); r.status != 404 {
		t.Errorf("resume bad id: %d; want 404", r.status)
	}
	if r := e.do(t, "GET", "/admin/v1/campaigns/"+camp+"/pause", token, ""); r.status != 405 || r.header.Get("Allow") != "POST" {
		t.Errorf("GET pause: %d Allow %q; want 405 Allow POST", r.status, r.header.Get("Allow"))
	}
}

func TestSegment(t *testing.T) {
	e := start(t, admin.Config{Token: token})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	seg := testenv.ID(t, "seg")
	path := "/admin/v1/segments/" + seg

	r := e.do(t, "PUT", path, token, "u-1\nu-2\r\n\n  u-3  \nu-1\n")
	if r.status != 200 {
		t.Fatalf("PUT segment: %d %s", r.status, r.body)
	}
	if m := r.json(t); m["segment"] != seg || m["size"] != float64(3) {
		t.Errorf("answer %v; want size 3", m)
	}
	members, err := e.rdb.SMembers(ctx, rkeys.Segment(seg)).Result()
	if err != nil || len(members) != 3 {
		t.Fatalf("redis members %v, %v; want 3", members, err)
	}
	// Replacing shrinks it atomically.
	if r := e.do(t, "PUT", path, token, "u-9\n"); r.status != 200 {
		t.Fatalf("replace: %d %s", r.status, r.body)
	}
	if ok, _ := e.rdb.SIsMember(ctx, rkeys.Segment(seg), "u-1").Result(); ok {
		t.Errorf("u-1 still a member after the segment was replaced")
	}
	for _, tc := range []struct{ name, path, body, wantMsg string }{
		{"bad user id", path, "u-1\nu 2\n", "line 2: user id must be"},
		{"hostile user id", path, "{u}\n", "line 1: user id must be"},
		{"bad name", "/admin/v1/segments/seg*", "u-1\n", "name: must be 1-64"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := e.do(t, "PUT", tc.path, token, tc.body)
			if r.status != 400 || !strings.HasPrefix(fmt.Sprint(r.json(t)["message"]), tc.wantMsg) {
				t.Errorf("%d %s; want 400 with message starting %q", r.status, r.body, tc.wantMsg)
			}
		})
	}
	if members, _ := e.rdb.SMembers(ctx, rkeys.Segment(seg)).Result(); len(members) != 1 || members[0] != "u-9" {
		t.Errorf("members after bad input %v; want [u-9]", members)
	}
	if r := e.do(t, "POST", path, token, "u-1"); r.status != 405 || r.header.Get("Allow") != "PUT" {
		t.Errorf("POST segment: %d Allow %q", r.status, r.header.Get("Allow"))
	}
}

func TestHealthAndMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "flashgate_test_admin_total", Help: "test"})
	reg.MustRegister(c)
	c.Add(3)
	rdb, pg := testenv.Redis(t), testenv.PG(t)
	testenv.RequireBroker(t)
	kcl, err := kgo.NewClient(kgo.SeedBrokers(testenv.Brokers()...))
	if err != nil {
		t.Fatal(err)
	}
	defer kcl.Close()
	// A Redis nobody listens on: a real unreachable server, not a mock.
	deadAddr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	dead := redis.NewClient(&redis.Options{Addr: deadAddr, DialTimeout: 200 * time.Millisecond, MaxRetries: -1})
	defer dead.Close()
	checks := []admin.Check{
		{Name: "redis", Ping: func(ctx context.Context) error { return rdb.Ping(ctx).Err() }},
		{Name: "kafka", Ping: kcl.Ping},
		{Name: "postgres", Ping: pg.Ping},
	}

	up := start(t, admin.Config{Token: token, Gatherer: reg, Checks: checks})
	if r := up.do(t, "GET", "/healthz", "", ""); r.status != 200 || r.body != `{"status":"ok"}` {
		t.Errorf("healthz: %d %s", r.status, r.body)
	}
	if r := up.do(t, "GET", "/readyz", "", ""); r.status != 200 || r.body != `{"status":"ready"}` {
		t.Errorf("readyz with everything up: %d %s", r.status, r.body)
	}
	r := up.do(t, "GET", "/metrics", "", "")
	if r.status != 200 || !strings.Contains(r.body, "flashgate_test_admin_total 3") || !strings.HasPrefix(r.header.Get("Content-Type"), "text/plain") {
		t.Errorf("metrics: %d %q\n%s", r.status, r.header.Get("Content-Type"), r.body)
	}
	if r := up.do(t, "POST", "/readyz", "", ""); r.status != 405 || r.header.Get("Allow") != "GET, HEAD" {
		t.Errorf("POST readyz: %d Allow %q", r.status, r.header.Get("Allow"))
	}
	if r := up.do(t, "GET", "/nope", "", ""); r.status != 404 {
		t.Errorf("unknown path: %d", r.status)
	}
	up.s.SetDraining()
	if r := up.do(t, "GET", "/readyz", "", ""); r.status != 503 || r.body != `{"status":"draining"}` {
		t.Errorf("readyz while draining: %d %s; want 503 draining", r.status, r.body)
	}
	if r := up.do(t, "GET", "/healthz", "", ""); r.status != 200 {
		t.Errorf("healthz while draining: %d; want 200", r.status)
	}

	down := start(t, admin.Config{Token: token, ReadyTimeout: 500 * time.Millisecond, Checks: append(checks,
		admin.Check{Name: "redis-replica", Ping: func(ctx context.Context) error { return dead.Ping(ctx).Err() }})})
	began := time.Now()
	r = down.do(t, "GET", "/readyz", "", "")
	if r.status != 503 {
		t.Fatalf("readyz with a dead redis: %d %s; want 503", r.status, r.body)
	}
	m := r.json(t)
	if fmt.Sprint(m["down"]) != "[redis-replica]" || m["status"] != "not_ready" {
		t.Errorf("readyz body %s; want down [redis-replica]", r.body)
	}
	if took := time.Since(began); took > 5*time.Second {
		t.Errorf("readyz took %s with a dead dependency; the timeout is 500ms", took)
	}
	if r := down.do(t, "GET", "/healthz", "", ""); r.status != 200 {
		t.Errorf("healthz with a dead dependency: %d; liveness must not depend on others", r.status)
	}

	// A dependency the main traffic does without (the gateway's Postgres) degrades the
	// process but leaves it ready; with a required one down too, it is not ready.
	deadDB := admin.Check{Name: "postgres-replica", Degrades: true, Ping: func(ctx context.Context) error { return dead.Ping(ctx).Err() }}
	degraded := start(t, admin.Config{Token: token, ReadyTimeout: 500 * time.Millisecond, Checks: append(checks[:3:3], deadDB)})
	r = degraded.do(t, "GET", "/readyz", "", "")
	if m := r.json(t); r.status != 200 || m["status"] != "degraded" || fmt.Sprint(m["degraded"]) != "[postgres-replica]" {
		t.Errorf("readyz with a degrading dependency down: %d %s; want 200, status degraded, degraded [postgres-replica]", r.status, r.body)
	}
	both := start(t, admin.Config{Token: token, ReadyTimeout: 500 * time.Millisecond, Checks: append(checks[:3:3], deadDB,
		admin.Check{Name: "redis-replica", Ping: func(ctx context.Context) error { return dead.Ping(ctx).Err() }})})
	r = both.do(t, "GET", "/readyz", "", "")
	if m := r.json(t); r.status != 503 || fmt.Sprint(m["down"]) != "[redis-replica]" || fmt.Sprint(m["degraded"]) != "[postgres-replica]" {
		t.Errorf("readyz with a required and a degrading dependency down: %d %s; want 503 naming each", r.status, r.body)
	}
}

// Go's profiles show internals (goroutine stacks, command line), so they sit behind the
// admin token; an SRE with the token takes a CPU profile of a gateway at peak.
func TestProfilesNeedTheToken(t *testing.T) {
	e := start(t, admin.Config{Token: token})
	if r := e.do(t, "GET", "/debug/pprof/cmdline", "", ""); r.status != 401 || strings.Contains(r.body, "admin") {
		t.Errorf("cmdline without a token: %d %q; want 401 and no command line", r.status, r.body)
	}
	if r := e.do(t, "GET", "/debug/pprof/goroutine?debug=1", "wrong", ""); r.status != 401 {
		t.Errorf("goroutine profile with a wrong token: %d; want 401", r.status)
	}
	r := e.do(t, "GET", "/debug/pprof/goroutine?debug=1", token, "")
	if r.status != 200 || !strings.Contains(r.body, "goroutine profile:") {
		t.Errorf("goroutine profile with the token: %d %.80q; want 200 and a profile", r.status, r.body)
	}
}
