package main

// In-process end-to-end tests of the gateway: run() - the whole process as main wires
// it - against the real dev stack (Redis, Postgres, the Kafka-protocol broker), driven
// over HTTP on free ports.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/flashgate/flashgate/internal/catalog"
	"github.com/flashgate/flashgate/internal/rkeys"
	"github.com/flashgate/flashgate/internal/testenv"
)

const testToken = "e2e-admin-token"

// lineWriter sends run's log to the test log, and nothing once the test is over.
type lineWriter struct {
	mu     sync.Mutex
	t      testing.TB
	buf    []byte
	closed bool
}

func (w *lineWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return len(b), nil
	}
	w.buf = append(w.buf, b...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			return len(b), nil
		}
		w.t.Logf("[gateway] %s", w.buf[:i])
		w.buf = w.buf[i+1:]
	}
}

func (w *lineWriter) close() { w.mu.Lock(); w.closed = true; w.mu.Unlock() }

type gateway struct {
	pub, adm string // base URLs
	stop     func() error
}

// startGateway runs the gateway in-process on free ports and waits for /readyz. The
// test's client IP is taken from X-Forwarded-For (loopback is a trusted proxy) so every
// test can claim from an IP of its own.
func startGateway(t *testing.T, extra ...string) *gateway {
	t.Helper()
	testenv.RequireBroker(t)
	t.Setenv("FLASH_ADMIN_TOKEN", testToken)
	pub := "127.0.0.1:" + strconv.Itoa(testenv.FreePort(t))
	adm := "127.0.0.1:" + strconv.Itoa(testenv.FreePort(t))
	ctx, cancel := context.WithCancel(context.Background())
	w := &lineWriter{t: t}
	done := make(chan struct{})
	var runErr error
	args := append([]string{"-http-addr", pub, "-admin-addr", adm, "-trusted-proxies", "127.0.0.1/32,::1/128",
		"-shutdown-timeout", "10s"}, extra...)
	go func() {
		defer close(done)
		runErr = run(ctx, args, w)
	}()
	var once sync.Once
	g := &gateway{pub: "http://" + pub, adm: "http://" + adm}
	g.stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case <-done:
			case <-time.After(30 * time.Second):
				runErr = errors.New("run did not return within 30s of cancel")
			}
			w.close()
		})
		return runErr
	}
	t.Cleanup(func() {
		if err := g.stop(); err != nil {
			t.Errorf("gateway run: %v", err)
		}
	})
	testenv.WaitHTTP(t, g.adm+"/readyz", 30*time.Second, done)
	return g
}

var httpClient = &http.Client{Timeout: 15 * time.Second}

type answer struct {
	status int
	header http.Header
	body   []byte
}

func (a answer) String() string { return fmt.Sprintf("%d %s", a.status, a.body) }

func (a answer) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(a.body, &m); err != nil {
		t.Fatalf("answer %s is not a JSON object: %v", a, err)
	}
	return m
}

// send makes one request; headers are name/value pairs.
func send(t *testing.T, method, url, contentType string, body []byte, headers ...string) answer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Add(headers[i], headers[i+1])
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, url, err)
	}
	return answer{resp.StatusCode, resp.Header, b}
}

// claimant is one test client: a fresh IP, as a trusted proxy would forward it.
type claimant struct {
	t   *testing.T
	g   *gateway
	xff string
}

func newClaimant(t *testing.T, g *gateway) *claimant {
	// 198.18.0.0/15 is reserved for benchmarking: never a real client, and fresh per
	// test so no block or velocity log of another test applies.
	return &claimant{t: t, g: g, xff: fmt.Sprintf("198.18.%d.%d", rand.IntN(256), 1+rand.IntN(254))}
}

func (c *claimant) claim(campaign, sku, user, device, requestID string) answer {
	c.t.Helper()
	body, _ := json.Marshal(map[string]string{"campaign_id": campaign, "sku": sku, "user_id": user,
		"device_id": device, "request_id": requestID})
	return send(c.t, "POST", c.g.pub+"/v1/claims", "application/json", body, "X-Forwarded-For", c.xff)
}

// claimUntilAnswered retries a claim with the same request_id while the gateway answers
// 503: a retry that arrives while the first attempt is still being made durable is told
// to come back (CONTRACT.md: retry with the same request_id).
func (c *claimant) claimUntilAnswered(campaign, sku, user, device, requestID string) answer {
	c.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		a := c.claim(campaign, sku, user, device, requestID)
		if a.status != http.StatusServiceUnavailable || time.Now().After(deadline) {
			return a
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// campaign creates a business line and a campaign through the catalog, with the risk
// rules off for the campaign (so a global default another test sets cannot interfere),
// and returns when it has started.
func setupCampaign(t *testing.T, skus string) (camp, bl string, rdb *redis.Client, pg *pgxpool.Pool) {
	t.Helper()
	rdb, pg = testenv.Redis(t), testenv.PG(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cat := catalog.New(pg, rdb)
	bl, camp = testenv.ID(t, "bl"), testenv.ID(t, "camp")
	if err := cat.PutBusinessLine(ctx, bl, 1_000_000); err != nil {
		t.Fatalf("business line: %v", err)
	}
	starts := time.Now().Add(1500 * time.Millisecond)
	body := fmt.Sprintf(`{"name":"e2e","business_line":%q,"starts_at":%q,"ends_at":%q,"per_user_limit":1,
		"budget":100000,"voucher_ttl":"72h","segment":null,"skus":%s}`,
		bl, starts.Format(time.RFC3339Nano), starts.Add(time.Hour).Format(time.RFC3339Nano), skus)
	cp, err := catalog.DecodeCampaign(camp, []byte(body))
	if err != nil {
		t.Fatalf("campaign: %v", err)
	}
	if err := cat.PutCampaign(ctx, cp); err != nil {
		t.Fatalf("put campaign: %v", err)
	}
	if err := rdb.HSet(ctx, rkeys.RiskRules(camp), "device.max", 0, "ip.max", 0, "user.max", 0, "freeze.max", 0, "shadow", 0).Err(); err != nil {
		t.Fatal(err)
	}
	return camp, bl, rdb, pg
}

func waitStart(t *testing.T, rdb *redis.Client, camp string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ms, err := rdb.HGet(ctx, rkeys.Meta(camp), "starts").Int64()
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Until(time.UnixMilli(ms + 50)))
}

var claimIDPattern = regexp.MustCompile(`^[A-Za-z0-9._:-]+\.[0-9a-v]{26}$`)

func TestClaimEndToEnd(t *testing.T) {
	g := startGateway(t)
	camp, _, rdb, pg := setupCampaign(t, `[{"sku":"rp-50","stock":2,"value":50},{"sku":"rp-500","stock":0,"value":500}]`)
	c := newClaimant(t, g)
	u1, u2, u3 := testenv.ID(t, "u"), testenv.ID(t, "u"), testenv.ID(t, "u")

	// Before the start: a business answer, nothing taken.
	if a := c.claim(camp, "rp-50", u1, "d-1", testenv.ID(t, "rq")); a.status != 409 || string(a.body) != `{"result":"rejected","reason":"not_started"}` {
		t.Fatalf("claim before the start: %s; want 409 not_started", a)
	}
	waitStart(t, rdb, camp)

	// Accepted: the 200 body of CONTRACT.md.
	rq1 := testenv.ID(t, "rq")
	a := c.claimUntilAnswered(camp, "rp-50", u1, "d-1", rq1)
	if a.status != 200 {
		t.Fatalf("first claim: %s; want 200", a)
	}
	if a.header.Get("Content-Type") != "application/json" || a.header.Get("Idempotent-Replayed") != "" {
		t.Errorf("first claim headers: %v", a.header)
	}
	m := a.json(t)
	claimID, _ := m["claim_id"].(string)
	keys := slices.Sorted(maps.Keys(m))
	if fmt.Sprint(keys) != "[campaign_id claim_id expires_at result sku user_id value]" || m["result"] != "accepted" ||
		m["campaign_id"] != camp || m["sku"] != "rp-50" || m["user_id"] != u1 || m["value"] != float64(50) ||
		!claimIDPattern.MatchString(claimID) || !strings.HasPrefix(claimID, camp+".") {
		t.Errorf("accepted body %s", a.body)
	}
	exp, err := time.Parse(time.RFC3339, fmt.Sprint(m["expires_at"]))
	if err != nil || exp.Before(time.Now().Add(71*time.Hour)) || exp.After(time.Now().Add(73*time.Hour)) {
		t.Errorf("expires_at %v (%v); want about 72h from now", m["expires_at"], err)
	}

	// A retry: the same answer, the same claim_id, marked as a replay.
	r := c.claimUntilAnswered(camp, "rp-50", u1, "d-1", rq1)
	if r.status != 200 || r.header.Get("Idempotent-Replayed") != "true" || !bytes.Equal(r.body, a.body) {
		t.Errorf("retry: %s replayed=%q; want 200, Idempotent-Replayed: true and the first body %s", r, r.header.Get("Idempotent-Replayed"), a.body)
	}
	// The same request_id for a different claim.
	if r := c.claim(camp, "rp-500", u1, "d-1", rq1); r.status != 422 || string(r.body) != `{"error":"idempotency_key_reuse"}` {
		t.Errorf("key reuse: %s; want 422 idempotency_key_reuse", r)
	}
	// The Idempotency-Key header works like request_id.
	body := []byte(fmt.Sprintf(`{"campaign_id":%q,"sku":"rp-50","user_id":%q,"device_id":"d-1"}`, camp, u1))
	if r := send(t, "POST", g.pub+"/v1/claims", "application/json", body, "Idempotency-Key", rq1, "X-Forwarded-For", c.xff); r.status != 200 || !bytes.Equal(r.body, a.body) {
		t.Errorf("retry through Idempotency-Key: %s; want the first body", r)
	}

	if r := c.claim(camp, "rp-50", u1, "d-1", testenv.ID(t, "rq")); r.status != 409 || r.json(t)["reason"] != "user_limit" {
		t.Errorf("second claim of a user: %s; want 409 user_limit", r)
	}
	if r := c.claimUntilAnswered(camp, "rp-50", u2, "d-2", testenv.ID(t, "rq")); r.status != 200 {
		t.Errorf("u2: %s; want 200", r)
	}
	rq3 := testenv.ID(t, "rq")
	if r := c.claim(camp, "rp-50", u3, "d-3", rq3); r.status != 409 || string(r.body) != `{"result":"rejected","reason":"sold_out"}` {
		t.Errorf("u3: %s; want 409 sold_out", r)
	}
	// sold_out is re-derived from the stock on a retry, not replayed (DESIGN.md "Which
	// rejections are remembered"): the same 409 while sold out, without the header.
	if r := c.claim(camp, "rp-50", u3, "d-3", rq3); r.status != 409 || r.json(t)["reason"] != "sold_out" || r.header.Get("Idempotent-Replayed") != "" {
		t.Errorf("u3 retry: %s replayed=%q; want 409 sold_out, decided again", r, r.header.Get("Idempotent-Replayed"))
	}
	if r := c.claim(camp, "rp-500", u3, "d-3", testenv.ID(t, "rq")); r.status != 409 || r.json(t)["reason"] != "sold_out" {
		t.Errorf("stock 0: %s; want 409 sold_out", r)
	}
	if r := c.claim(testenv.ID(t, "nocamp"), "rp-50", u3, "d-3", testenv.ID(t, "rq")); r.status != 404 || string(r.body) != `{"error":"unknown_campaign"}` {
		t.Errorf("unknown campaign: %s; want 404 unknown_campaign", r)
	}
	if r := c.claim(camp, "rp-9999", u3, "d-3", testenv.ID(t, "rq")); r.status != 404 || string(r.body) != `{"error":"unknown_sku"}` {
		t.Errorf("unknown sku: %s; want 404 unknown_sku", r)
	}

	// GET: pending in Redis, or settled if a settler on the dev stack got to it.
	gr := send(t, "GET", g.pub+"/v1/claims/"+claimID+"?user_id="+u1, "", nil)
	if gr.status != 200 {
		t.Fatalf("GET claim: %s", gr)
	}
	if gm := gr.json(t); gm["claim_id"] != claimID || gm["user_id"] != u1 || (gm["state"] != "pending" && gm["state"] != "settled") {
		t.Errorf("GET claim: %s; want pending or settled for %s", gr.body, u1)
	}
	if r := send(t, "GET", g.pub+"/v1/claims/"+camp+".0000000000000000000000000z?user_id="+u1, "", nil); r.status != 404 {
		t.Errorf("GET unknown claim: %s; want 404", r)
	}
	if r := send(t, "GET", g.pub+"/v1/claims", "", nil); r.status != 405 || r.header.Get("Allow") != "POST" {
		t.Errorf("GET /v1/claims: %s Allow %q; want 405 Allow POST", r, r.header.Get("Allow"))
	}

	// Redeem goes through gateway/vouchers: settled rows as the settler writes them, in a
	// campaign of their own so that this campaign's reconciliation stays true.
	vcamp := testenv.ID(t, "vcamp")
	settled := vcamp + ".0000000000000000000000001a"
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	insert := func(id, user string, expires time.Time) {
		_, err := pg.Exec(ctx, `INSERT INTO claims (claim_id, request_id, campaign_id, business_line, sku, user_id,
			device_id, ip, value, claimed_at, expires_at, kafka_partition, kafka_offset)
			VALUES ($1, $2, $3, 'bl', 'rp-50', $4, 'd-9', '198.18.0.1', 50, now(), $5, 0, 0)`,
			id, testenv.ID(t, "rq"), vcamp, user, expires)
		if err != nil {
			t.Fatal(err)
		}
	}
	owner := testenv.ID(t, "u")
	insert(settled, owner, time.Now().Add(time.Hour))
	redeem := func(id, user string) answer {
		return send(t, "POST", g.pub+"/v1/claims/"+id+"/redeem", "application/json", []byte(`{"user_id":"`+user+`"}`))
	}
	// Another user hears what an unknown id gets (CONTRACT.md "Owner only").
	if r := redeem(settled, "someone-else"); r.status != 404 || string(r.body) != `{"error":"unknown_claim"}` {
		t.Errorf("redeem by another user: %s; want 404 unknown_claim", r)
	}
	first := redeem(settled, owner)
	if first.status != 200 || first.json(t)["state"] != "redeemed" || first.json(t)["redeemed_at"] == nil {
		t.Fatalf("redeem: %s; want 200 redeemed", first)
	}
	if again := redeem(settled, owner); again.status != 200 || !bytes.Equal(again.body, first.body) {
		t.Errorf("redeem again: %s; want the same 200 body %s", again, first.body)
	}
	if gr := send(t, "GET", g.pub+"/v1/claims/"+settled+"?user_id="+owner, "", nil); gr.status != 200 || gr.json(t)["state"] != "redeemed" {
		t.Errorf("GET redeemed: %s", gr)
	}
	expired := vcamp + ".0000000000000000000000002a"
	insert(expired, owner, time.Now().Add(-time.Minute))
	if r := redeem(expired, owner); r.status != 409 || string(r.body) != `{"result":"rejected","reason":"expired"}` {
		t.Errorf("redeem expired: %s; want 409 expired", r)
	}
	if r := redeem(vcamp+".0000000000000000000000003a", owner); r.status != 404 {
		t.Errorf("redeem unknown: %s; want 404", r)
	}

	// The admin API sees the same campaign; metrics count the outcomes.
	// A short-circuited rejection is counted in the gateway and added to Redis every
	// RejectFlush (claimer), so the figures may lag it by that much: read them until the
	// count arrives (or 5 s), then check everything.
	var f catalog.Figures
	deadline := time.Now().Add(5 * time.Second)
	for {
		fig := send(t, "GET", g.adm+"/admin/v1/campaigns/"+camp, "", nil, "Authorization", "Bearer "+testToken)
		f = catalog.Figures{}
		if fig.status != 200 || json.Unmarshal(fig.body, &f) != nil {
			t.Fatalf("figures: %s", fig)
		}
		if f.Rejections["sold_out"] >= 3 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if f.Accepted != 2 || f.BudgetSpent != 100 || len(f.SKUs) != 2 || f.SKUs[0].SKU != "rp-50" || f.SKUs[0].StockLeft != 0 || f.Rejections["sold_out"] != 3 {
		// 3: u3's retry of its sold_out was decided again (not replayed), so counted.
		t.Errorf("figures %+v; want 2 accepted, 100 spent, rp-50 sold out, 3 sold_out rejections", f)
	}
	if r := send(t, "GET", g.adm+"/admin/v1/campaigns/"+camp, "", nil); r.status != 401 {
		t.Errorf("admin without token: %s; want 401", r)
	}
	met := send(t, "GET", g.adm+"/metrics", "", nil)
	for _, want := range []string{`flashgate_gateway_claims_total{outcome="accepted"}`, `flashgate_gateway_claims_total{outcome="sold_out"}`,
		"flashgate_gateway_script_seconds_bucket", "go_goroutines"} {
		if !bytes.Contains(met.body, []byte(want)) {
			t.Errorf("metrics lack %s", want)
		}
	}

	// Graceful shutdown: run returns nil, and the listener is gone.
	if err := g.stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if _, err := httpClient.Get(g.pub + "/v1/claims"); err == nil {
		t.Errorf("the public listener still answers after shutdown")
	}
}

// snapshot is the campaign's Redis state: the exact bytes (DUMP) of every key a claim
// may change, and the entry ids of the outbox and the inflight hash.
type snapshot struct {
	dumps    map[string]string
	outbox   []string
	inflight []string
	rqKeys   []string
}

func takeSnapshot(t *testing.T, rdb *redis.Client, camp, bl string, skus []string) snapshot {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	keys := []string{rkeys.Meta(camp), rkeys.SKUs(camp), rkeys.Users(camp), rkeys.Rejections(camp), rkeys.BusinessLine(bl)}
	for _, s := range skus {
		keys = append(keys, rkeys.SKU(camp, s))
	}
	s := snapshot{dumps: map[string]string{}}
	for _, k := range keys {
		d, err := rdb.Dump(ctx, k).Result()
		if err != nil && err != redis.Nil {
			t.Fatal(err)
		}
		s.dumps[k] = d
	}
	xs, err := rdb.XRange(ctx, rkeys.Outbox(camp), "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range xs {
		s.outbox = append(s.outbox, x.ID)
	}
	if s.inflight, err = rdb.HKeys(ctx, rkeys.Inflight(camp)).Result(); err != nil {
		t.Fatal(err)
	}
	if s.rqKeys, err = rdb.Keys(ctx, rkeys.Request(camp, "*")).Result(); err != nil {
		t.Fatal(err)
	}
	return s
}

// TestBadInputChangesNothing sends hostile and malformed claims; each gets its 4xx with
// a message naming what was wrong, and the campaign's Redis state is unchanged.
func TestBadInputChangesNothing(t *testing.T) {
	g := startGateway(t)
	camp, bl, rdb, _ := setupCampaign(t, `[{"sku":"rp-50","stock":100,"value":50}]`)
	skus := []string{"rp-50"}
	waitStart(t, rdb, camp)
	c := newClaimant(t, g)
	// One accepted claim and one rejection, so stock, spent, the users hash, the
	// rejections hash and the outbox all have something in them.
	user := testenv.ID(t, "u")
	if a := c.claimUntilAnswered(camp, "rp-50", user, "d-1", testenv.ID(t, "rq")); a.status != 200 {
		t.Fatalf("setup claim: %s", a)
	}
	if a := c.claim(camp, "rp-50", user, "d-1", testenv.ID(t, "rq")); a.status != 409 {
		t.Fatalf("setup rejection: %s", a)
	}
	before := takeSnapshot(t, rdb, camp, bl, skus)
	if len(before.outbox) == 0 && len(before.inflight) == 0 && len(before.rqKeys) < 2 {
		t.Logf("outbox already drained by a settler on the dev stack")
	}

	valid := func(kv ...string) []byte {
		m := map[string]string{"campaign_id": camp, "sku": "rp-50", "user_id": testenv.ID(t, "u"), "device_id": "d-bad", "request_id": testenv.ID(t, "rq")}
		for i := 0; i+1 < len(kv); i += 2 {
			if kv[i+1] == "<absent>" {
				delete(m, kv[i])
			} else {
				m[kv[i]] = kv[i+1]
			}
		}
		b, _ := json.Marshal(m)
		return b
	}
	raw := func(format string) []byte {
		return []byte(strings.ReplaceAll(format, "CAMP", camp))
	}
	const ctJSON = "application/json"
	tests := []struct {
		name        string
		method      string
		contentType string
		body        []byte
		headers     []string
		status      int
		msg         string // the message must contain this
	}{
		{"no content type", "POST", "", valid(), nil, 415, "Content-Type"},
		{"form content type", "POST", "application/x-www-form-urlencoded", valid(), nil, 415, "Content-Type"},
		{"text/plain", "POST", "text/plain", valid(), nil, 415, "Content-Type"},
		{"body over 4 KiB", "POST", ctJSON, valid("device_id", strings.Repeat("d", 5000)), nil, 413, "4096"},
		{"empty body", "POST", ctJSON, nil, nil, 400, "JSON object"},
		{"not JSON", "POST", ctJSON, raw(`campaign_id=CAMP&sku=rp-50`), nil, 400, "JSON object"},
		{"array", "POST", ctJSON, raw(`[{"campaign_id":"CAMP"}]`), nil, 400, "JSON object"},
		{"unknown field", "POST", ctJSON, raw(`{"campaign_id":"CAMP","sku":"rp-50","user_id":"u","device_id":"d","request_id":"r-x1","stock":"1"}`), nil, 400, "stock: unknown field"},
		{"duplicate key", "POST", ctJSON, raw(`{"campaign_id":"CAMP","sku":"rp-50","sku":"rp-50","user_id":"u","device_id":"d","request_id":"r-x2"}`), nil, 400, "sku: given more than once"},
		{"number value", "POST", ctJSON, raw(`{"campaign_id":"CAMP","sku":"rp-50","user_id":1001,"device_id":"d","request_id":"r-x3"}`), nil, 400, "user_id: must be a string"},
		{"null value", "POST", ctJSON, raw(`{"campaign_id":"CAMP","sku":"rp-50","user_id":"u","device_id":null,"request_id":"r-x4"}`), nil, 400, "device_id: must be a string"},
		{"nested object", "POST", ctJSON, raw(`{"campaign_id":"CAMP","sku":{"id":"rp-50"},"user_id":"u","device_id":"d","request_id":"r-x5"}`), nil, 400, "sku: must be a string"},
		{"trailing data", "POST", ctJSON, raw(`{"campaign_id":"CAMP","sku":"rp-50","user_id":"u","device_id":"d","request_id":"r-x6"} {}`), nil, 400, "unexpected data after the JSON object"},
		{"truncated", "POST", ctJSON, raw(`{"campaign_id":"CAMP","sku":"rp-50"`), nil, 400, "unexpected end of JSON"},
		{"invalid UTF-8", "POST", ctJSON, raw("{\"campaign_id\":\"CAMP\",\"sku\":\"rp-50\",\"user_id\":\"u\xff\",\"device_id\":\"d\",\"request_id\":\"r-x7\"}"), nil, 400, "user_id: invalid UTF-8"},
		{"control character", "POST", ctJSON, raw("{\"campaign_id\":\"CAMP\",\"sku\":\"rp-50\",\"user_id\":\"u\x01\",\"device_id\":\"d\",\"request_id\":\"r-x8\"}"), nil, 400, "user_id: control character"},
		{"id too long", "POST", ctJSON, valid("user_id", strings.Repeat("u", 65)), nil, 400, "user_id: must be 1-64 characters"},
		{"empty id", "POST", ctJSON, valid("sku", ""), nil, 400, "sku: must be 1-64 characters"},
		{"star", "POST", ctJSON, valid("device_id", "d*"), nil, 400, "device_id: must be 1-64 characters"},
		{"brace", "POST", ctJSON, valid("campaign_id", "{"+camp+"}"), nil, 400, "campaign_id: must be 1-64 characters"},
		{"space", "POST", ctJSON, valid("request_id", "r 1"), nil, 400, "request_id: must be 1-64 characters"},
		{"unicode", "POST", ctJSON, valid("user_id", "用户"), nil, 400, "user_id: must be 1-64 characters"},
		{"escaped unicode", "POST", ctJSON, raw(`{"campaign_id":"CAMP","sku":"rp-50","user_id":"u\u00e9","device_id":"d","request_id":"r-x9"}`), nil, 400, "user_id: must be 1-64 characters"},
		{"lone surrogate", "POST", ctJSON, raw(`{"campaign_id":"CAMP","sku":"rp-50","user_id":"\ud800","device_id":"d","request_id":"r-x10"}`), nil, 400, "user_id: invalid escape"},
		{"missing device_id", "POST", ctJSON, valid("device_id", "<absent>"), nil, 400, "device_id: required"},
		{"missing request_id", "POST", ctJSON, valid("request_id", "<absent>"), nil, 400, "request_id: required"},
		{"missing campaign_id", "POST", ctJSON, valid("campaign_id", "<absent>"), nil, 400, "campaign_id: required"},
		{"header and body request_id differ", "POST", ctJSON, valid("request_id", "r-body"), []string{"Idempotency-Key", "r-header"}, 400, "request_id: differs from the Idempotency-Key header"},
		{"bad Idempotency-Key", "POST", ctJSON, valid("request_id", "<absent>"), []string{"Idempotency-Key", "r*1"}, 400, "request_id: must be 1-64 characters"},
		{"forged X-Forwarded-For", "POST", ctJSON, valid(), []string{"X-Forwarded-For", "not-an-ip"}, 400, "X-Forwarded-For"},
		{"GET on /v1/claims", "GET", "", nil, nil, 405, ""},
		{"PUT on /v1/claims", "PUT", ctJSON, valid(), nil, 405, ""},
		{"unknown path", "POST", ctJSON, valid(), []string{}, 404, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			url := g.pub + "/v1/claims"
			if tc.name == "unknown path" {
				url = g.pub + "/v1/claim"
			}
			headers := tc.headers
			if tc.name != "forged X-Forwarded-For" {
				headers = append(slices.Clone(headers), "X-Forwarded-For", c.xff)
			}
			a := send(t, tc.method, url, tc.contentType, tc.body, headers...)
			if a.status != tc.status {
				t.Fatalf("status %s; want %d", a, tc.status)
			}
			if a.header.Get("Content-Type") != "application/json" {
				t.Errorf("Content-Type %q; want application/json", a.header.Get("Content-Type"))
			}
			m := a.json(t)
			if tc.status == 405 && a.header.Get("Allow") != "POST" {
				t.Errorf("405 without Allow: POST")
			}
			if tc.msg != "" {
				msg, _ := m["message"].(string)
				if m["error"] != "invalid_request" || !strings.Contains(msg, tc.msg) {
					t.Errorf("body %s; want invalid_request with a message containing %q", a.body, tc.msg)
				}
			}
		})
	}

	// Headers beyond the listener's buffer: refused before the handler, in the API's shape.
	big := send(t, "POST", g.pub+"/v1/claims", "application/json", valid(), "X-Forwarded-For", c.xff, "X-Padding", strings.Repeat("p", 9000))
	if big.status != 431 || !bytes.Contains(big.body, []byte(`"invalid_request"`)) {
		t.Errorf("oversized headers: %s; want 431 invalid_request", big)
	}

	after := takeSnapshot(t, rdb, camp, bl, skus)
	for k, d := range before.dumps {
		if after.dumps[k] != d {
			t.Errorf("bad input changed %s", k)
		}
	}
	// A settler on the dev stack may settle the setup claim meanwhile, which removes it
	// from the outbox and the inflight hash; bad input must add nothing to either.
	sub := func(name string, a, b []string) {
		for _, x := range a {
			if !slices.Contains(b, x) {
				t.Errorf("bad input added %s entry %s", name, x)
			}
		}
	}
	sub("outbox", after.outbox, before.outbox)
	sub("inflight", after.inflight, before.inflight)
	sub("request record", after.rqKeys, before.rqKeys)
	if len(after.outbox) > len(before.outbox) {
		t.Errorf("outbox length %d, was %d", len(after.outbox), len(before.outbox))
	}
}

// -reject-ttl bounds how long a rejection is remembered for its request_id, on both
// paths that remember one: claim.lua (the first sold_out) and the short-circuit (later
// ones, once the SKU is known sold out). The retry within the TTL still gets the same
// answer.
func TestRejectTTLBoundsRememberedRejections(t *testing.T) {
	g := startGateway(t, "-reject-ttl", "7s")
	// user_limit, a remembered rejection (sold_out no longer is: DESIGN.md "Which
	// rejections are remembered").
	camp, _, rdb, _ := setupCampaign(t, `[{"sku":"rp-50","stock":10,"value":50}]`)
	waitStart(t, rdb, camp)
	c := newClaimant(t, g)
	ctx := context.Background()
	for i := range 2 {
		u := testenv.ID(t, "u")
		if r := c.claimUntilAnswered(camp, "rp-50", u, "d-1", testenv.ID(t, "rq")); r.status != 200 {
			t.Fatalf("claim %d: %s; want 200", i, r)
		}
		rq := testenv.ID(t, "rq")
		if r := c.claim(camp, "rp-50", u, "d-1", rq); r.status != 409 || r.json(t)["reason"] != "user_limit" {
			t.Fatalf("claim %d: %s; want 409 user_limit", i, r)
		}
		ttl, err := rdb.PTTL(ctx, rkeys.Request(camp, rq)).Result()
		if err != nil {
			t.Fatal(err)
		}
		if ttl <= 0 || ttl > 7*time.Second {
			t.Errorf("claim %d: the rejection is remembered for %s; want at most -reject-ttl 7s", i, ttl)
		}
	}
}

func TestParseFlags(t *testing.T) {
	for _, env := range []string{"FLASH_HTTP_ADDR", "FLASH_ADMIN_ADDR", "FLASH_TRUSTED_PROXIES", "FLASH_BATCH_WAIT", "FLASH_ADMIN_TOKEN", "FLASH_WORKERS",
		"FLASH_READ_TIMEOUT", "FLASH_WRITE_TIMEOUT", "FLASH_IDLE_TIMEOUT", "FLASH_MAX_HEADER_BYTES", "FLASH_MAX_CONNS", "FLASH_MAX_CONNS_PER_IP",
		"FLASH_REJECT_TTL"} {
		t.Setenv(env, "")
	}
	cfg, err := parseFlags(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.httpAddr != "127.0.0.1:8080" || cfg.adminAddr != "127.0.0.1:8081" || cfg.adminToken != "" || len(cfg.proxies) != 0 ||
		cfg.batchSize != 64 || cfg.workers != 4 || cfg.deliveryTimeout != 5*time.Second || cfg.rejectTTL != time.Hour {
		t.Errorf("defaults: %+v", cfg)
	}
	if cfg.readTimeout != 5*time.Second || cfg.writeTimeout != 5*time.Second || cfg.idleTimeout != time.Minute ||
		cfg.maxHeaderBytes != 8192 || cfg.maxConns != 16384 || cfg.maxConnsPerIP != 8192 {
		t.Errorf("listener defaults: %+v", cfg)
	}
	t.Setenv("FLASH_MAX_CONNS_PER_IP", "0")
	if cfg, err := parseFlags([]string{"-max-conns", "10", "-read-timeout", "250ms"}, io.Discard); err != nil ||
		cfg.maxConnsPerIP != 0 || cfg.maxConns != 10 || cfg.readTimeout != 250*time.Millisecond {
		t.Errorf("per-IP limit off from env: %+v, %v", cfg, err)
	}
	t.Setenv("FLASH_MAX_CONNS_PER_IP", "")
	cfg, err = parseFlags([]string{"-trusted-proxies", " 10.0.0.0/8, 192.168.1.7 ,::ffff:172.16.0.1, fd00::/8,"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(cfg.proxies) != "[10.0.0.0/8 192.168.1.7/32 172.16.0.1/32 fd00::/8]" {
		t.Errorf("proxies %v", cfg.proxies)
	}

	tests := []struct {
		name    string
		env     []string
		args    []string
		wantErr string
	}{
		{"bad CIDR", nil, []string{"-trusted-proxies", "10.0.0.0/8,10.0.0.0/33"}, `"10.0.0.0/33"`},
		{"not an address", nil, []string{"-trusted-proxies", "10.0.0.0/8, proxy.internal"}, `"proxy.internal"`},
		{"bad CIDR from env", []string{"FLASH_TRUSTED_PROXIES", "1.2.3.4/xx"}, nil, `FLASH_TRUSTED_PROXIES): entry "1.2.3.4/xx"`},
		{"bad duration in env", []string{"FLASH_BATCH_WAIT", "fast"}, nil, "FLASH_BATCH_WAIT"},
		{"bad int in env", []string{"FLASH_WORKERS", "many"}, nil, "FLASH_WORKERS"},
		{"token is not a flag", nil, []string{"-admin-token", "x"}, "admin-token"},
		{"bad listen address", nil, []string{"-http-addr", "8080"}, "FLASH_HTTP_ADDR"},
		{"stray argument", nil, []string{"serve"}, "unexpected arguments: serve"},
		{"no brokers", nil, []string{"-kafka-brokers", " , "}, "FLASH_KAFKA_BROKERS"},
		{"tiny delivery timeout", nil, []string{"-delivery-timeout", "1ms"}, "FLASH_DELIVERY_TIMEOUT"},
		{"read timeout too short", nil, []string{"-read-timeout", "10ms"}, "-read-timeout (FLASH_READ_TIMEOUT)=10ms, want 100ms..1m"},
		{"read timeout off", []string{"FLASH_READ_TIMEOUT", "0s"}, nil, "-read-timeout (FLASH_READ_TIMEOUT)=0s"},
		{"write timeout too long", nil, []string{"-write-timeout", "2m"}, "-write-timeout (FLASH_WRITE_TIMEOUT)=2m0s, want 100ms..1m"},
		{"idle timeout too short", nil, []string{"-idle-timeout", "10ms"}, "-idle-timeout (FLASH_IDLE_TIMEOUT)=10ms, want 1s..1h"},
		{"header buffer too small", nil, []string{"-max-header-bytes", "1024"}, "-max-header-bytes (FLASH_MAX_HEADER_BYTES)=1024, want 4096..65536"},
		{"header buffer too big", []string{"FLASH_MAX_HEADER_BYTES", "1048576"}, nil, "FLASH_MAX_HEADER_BYTES"},
		{"no connections", nil, []string{"-max-conns", "0"}, "-max-conns (FLASH_MAX_CONNS)=0, want 1..1048576"},
		{"negative per-IP limit", nil, []string{"-max-conns-per-ip", "-1"}, "-max-conns-per-ip (FLASH_MAX_CONNS_PER_IP)=-1"},
		{"per-IP limit above the total", nil, []string{"-max-conns", "100", "-max-conns-per-ip", "200"}, "-max-conns-per-ip (FLASH_MAX_CONNS_PER_IP)=200, want 0 (no limit) up to -max-conns (100)"},
		{"per-IP limit not a number", []string{"FLASH_MAX_CONNS_PER_IP", "lots"}, nil, "FLASH_MAX_CONNS_PER_IP"},
		{"rejections not remembered", nil, []string{"-reject-ttl", "500ms"}, "-reject-ttl (FLASH_REJECT_TTL)=500ms, want 1s..24h"},
		{"rejections remembered for days", []string{"FLASH_REJECT_TTL", "48h"}, nil, "-reject-ttl (FLASH_REJECT_TTL)=48h0m0s, want 1s..24h"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for i := 0; i+1 < len(tc.env); i += 2 {
				t.Setenv(tc.env[i], tc.env[i+1])
			}
			_, err := parseFlags(tc.args, io.Discard)
			var ue usageError
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !errors.As(err, &ue) {
				t.Errorf("parseFlags(%v) = %v; want a usage error containing %s", tc.args, err, tc.wantErr)
			}
		})
	}

	t.Setenv("FLASH_ADMIN_TOKEN", " from-env ")
	if cfg, err := parseFlags(nil, io.Discard); err != nil || cfg.adminToken != "from-env" {
		t.Errorf("token from env: %q, %v", cfg.adminToken, err)
	}
}

// TestRunRefusesOpenAdmin: without a token, run refuses a non-loopback admin address
// before it listens on anything.
func TestRunRefusesOpenAdmin(t *testing.T) {
	testenv.Redis(t)
	testenv.PG(t)
	t.Setenv("FLASH_ADMIN_TOKEN", "")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pub := "127.0.0.1:" + strconv.Itoa(testenv.FreePort(t))
	err := run(ctx, []string{"-http-addr", pub, "-admin-addr", "0.0.0.0:" + strconv.Itoa(testenv.FreePort(t)), "-log-level", "warn"}, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "FLASH_ADMIN_ADDR") || !strings.Contains(err.Error(), "FLASH_ADMIN_TOKEN") {
		t.Fatalf("run = %v; want an error naming FLASH_ADMIN_ADDR and FLASH_ADMIN_TOKEN", err)
	}
	if _, err := httpClient.Get("http://" + pub + "/v1/claims"); err == nil {
		t.Errorf("the public listener was opened although the admin config was refused")
	}
}
