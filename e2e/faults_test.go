package e2e

// Fault tests of issue 5: the real gateway and settler binaries, each fault made real
// (a process dying in a precise window, kill -9, a database crash), and the guarantees
// checked on what Redis and Postgres hold afterwards.
//
// Isolation. Every test here runs on a private Redis (its own port and AOF dir) and a
// private broker, and the Postgres test on a private Postgres cluster. A private Redis
// cannot share the dev stack's broker: a settler on the shared flash.claims would confirm
// other tests' claims against a Redis that never saw them (confirm.lua writes a claim
// whose idempotency record is missing), and the relay, expiry and reconciliation of a
// settler on the shared Redis would work on other tests' campaigns. Recovery is limited
// to the test's business line (FLASH_RECOVERY_BUSINESS_LINES) because after a Redis
// restart it otherwise rebuilds every live campaign of the shared books.

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/flashgate/flashgate/internal/rkeys"
	"github.com/flashgate/flashgate/internal/testenv"
)

// privRedis is a redis-server of the test's own, persisted like the dev stack's (AOF,
// fsync every second), that the test can kill -9 and restart from its AOF.
type privRedis struct {
	t    *testing.T
	port int
	dir  string
	p    *testenv.Proc
}

func startRedis(t *testing.T) *privRedis {
	t.Helper()
	r := &privRedis{t: t, port: testenv.FreePort(t), dir: tempDir(t, "redis")}
	r.start()
	return r
}

func (r *privRedis) addr() string { return "127.0.0.1:" + strconv.Itoa(r.port) }

func (r *privRedis) start() {
	r.t.Helper()
	r.p = testenv.Start(r.t, "redis-server", nil, "--bind", "127.0.0.1", "--port", strconv.Itoa(r.port),
		"--dir", r.dir, "--appendonly", "yes", "--appendfsync", "everysec", "--save", "", "--protected-mode", "yes")
	rdb := redis.NewClient(&redis.Options{Addr: r.addr(), DialTimeout: time.Second})
	defer rdb.Close()
	testenv.Eventually(r.t, 30*time.Second, "private redis loads its AOF and answers", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		return rdb.Ping(ctx).Err() == nil
	})
}

func (r *privRedis) client() *redis.Client {
	rdb := redis.NewClient(&redis.Options{Addr: r.addr(), DialTimeout: 2 * time.Second,
		ReadTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second, PoolSize: 16})
	r.t.Cleanup(func() { rdb.Close() })
	return rdb
}

// privPG is a Postgres cluster of the test's own (testenv.StartPG), so the test can
// crash and restart it without touching the dev stack's server that other tests use.
type privPG = testenv.PrivatePG

func startPG(t *testing.T) *privPG { return testenv.StartPG(t) }

// faultSys is a gateway and a settler on a private Redis and a private broker (and a
// private Postgres when pg is set), limited to one business line.
type faultSys struct {
	*system
	redis *privRedis
	bl    string
}

type faultOpts struct {
	pg *privPG
	// redis, when set, replaces the private redis-server: the environment that points
	// the binaries at it (FLASH_REDIS_SENTINELS, ...) and the test's own client of it.
	redis        *customRedis
	brokers      string // when set, used instead of a private broker process (kfake in the test)
	gatewayExtra []string
	settlerExtra []string
}

func startFaults(t *testing.T, o faultOpts) *faultSys {
	t.Helper()
	var rs *privRedis
	var rdb *redis.Client
	redisEnv := o.redis.env()
	if o.redis != nil {
		rdb = o.redis.rdb
	} else {
		rs = startRedis(t)
		rdb = rs.client()
		redisEnv = []string{"FLASH_REDIS_ADDR=" + rs.addr()}
	}
	brokers := o.brokers
	if brokers == "" {
		bport := testenv.FreePort(t)
		startBroker(t, tempDir(t, "broker"), bport)
		brokers = "127.0.0.1:" + strconv.Itoa(bport)
	}
	bl := testenv.ID(t, "bl")
	group := testenv.ID(t, "e2e-settler")
	pgURL := testenv.PGURL()
	if o.pg != nil {
		pgURL = o.pg.URL()
	}
	common := []string{redisEnv[0], "FLASH_PG_URL=" + pgURL, "FLASH_KAFKA_BROKERS=" + brokers,
		"FLASH_SETTLER_GROUP=" + group, "FLASH_RECOVERY_BUSINESS_LINES=" + bl}
	common = append(common, redisEnv[1:]...)
	// Not start(): it connects to the dev stack's Redis, which this system never uses.
	s := &system{t: t, rdb: rdb, brokers: brokers, group: group,
		http: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 256, MaxConnsPerHost: 256}}}
	if o.pg != nil {
		s.pg = o.pg.Pool(8)
	} else {
		s.pg = testenv.PG(t)
	}
	pub, adm := testenv.FreePort(t), testenv.FreePort(t)
	s.public = "http://127.0.0.1:" + strconv.Itoa(pub)
	s.admin = "http://127.0.0.1:" + strconv.Itoa(adm)
	s.gwEnv = append(append(common, "FLASH_HTTP_ADDR=127.0.0.1:"+strconv.Itoa(pub),
		"FLASH_ADMIN_ADDR=127.0.0.1:"+strconv.Itoa(adm), "FLASH_ADMIN_TOKEN="+adminToken), o.gatewayExtra...)
	s.startGateway()
	sp := testenv.FreePort(t)
	s.settler = "http://127.0.0.1:" + strconv.Itoa(sp)
	s.stEnv = append(append(common, "FLASH_SETTLER_ADDR=127.0.0.1:"+strconv.Itoa(sp)), o.settlerExtra...)
	s.startSettler()
	f := &faultSys{system: s, redis: rs, bl: bl}
	if code, b := s.adminDo("PUT", "/admin/v1/business-lines/"+bl, map[string]int64{"budget": 10_000_000}); code != 200 {
		t.Fatalf("PUT business line: %d %s", code, b)
	}
	return f
}

// without returns env minus the variables named.
func without(env []string, names ...string) []string {
	var out []string
next:
	for _, e := range env {
		for _, n := range names {
			if strings.HasPrefix(e, n+"=") {
				continue next
			}
		}
		out = append(out, e)
	}
	return out
}

// claimIDsInPG returns the claim ids of a campaign's rows and fails on a duplicate
// request id (two rows for one request would be a claim accepted twice).
func claimIDsInPG(t *testing.T, pg *pgxpool.Pool, campaign string) map[string]bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rows, err := pg.Query(ctx, `SELECT claim_id, request_id FROM claims WHERE campaign_id = $1`, campaign)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	ids, reqs := map[string]bool{}, map[string]bool{}
	for rows.Next() {
		var id, rq string
		if err := rows.Scan(&id, &rq); err != nil {
			t.Fatal(err)
		}
		if reqs[rq] {
			t.Errorf("request %s has two rows", rq)
		}
		ids[id], reqs[rq] = true, true
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return ids
}

// sale runs a sale in the background: users claim one each (retrying 503s with the same
// request id, as clients do) until all have an answer or the deadline passes. The
// returned func waits and returns the answers.
func (s *system) sale(campaign, skuID string, us []string, conc int) (wait func() []claimResp, answered *atomic.Int64) {
	answered = &atomic.Int64{}
	out := make([]claimResp, len(us))
	var wg sync.WaitGroup
	sem := make(chan struct{}, conc)
	wg.Go(func() {
		var inner sync.WaitGroup
		for i, u := range us {
			sem <- struct{}{}
			inner.Go(func() {
				defer func() { <-sem }()
				out[i] = s.claimUntilAnswered(claimReq{CampaignID: campaign, SKU: skuID, UserID: u,
					DeviceID: "dev-" + u, RequestID: "req-" + u}, 60*time.Second)
				answered.Add(1)
			})
		}
		inner.Wait()
	})
	return func() []claimResp { wg.Wait(); return out }, answered
}

// checkSale asserts the guarantees after a sale with a fault: accepted ≤ stock, every
// 200's claim id is a row, nothing accepted twice, and the rows are exactly what Redis
// accepted once everything settled.
func checkSale(t *testing.T, s *system, campaign string, stock int, answers []claimResp) {
	t.Helper()
	accepted, reasons, ids := count(answers)
	t.Logf("sale: %d accepted, others %v", accepted, reasons)
	if accepted > stock || len(ids) != accepted {
		t.Fatalf("accepted %d (distinct ids %d), stock %d: oversold or a claim id given twice", accepted, len(ids), stock)
	}
	if accepted == 0 {
		t.Fatal("nothing accepted: the sale did not happen")
	}
	n := s.settled(campaign, 90*time.Second)
	rows := claimIDsInPG(t, s.pg, campaign)
	for id := range ids {
		if !rows[id] {
			t.Errorf("claim %s was answered 200 but is not in Postgres", id)
		}
	}
	if n > int64(stock) {
		t.Errorf("rows %d > stock %d", n, stock)
	}
	taken := s.hgetInt(rkeys.SKU(campaign, "rp-50"), "taken")
	if taken != n {
		t.Errorf("redis taken %d, rows %d: counters and books disagree after settling", taken, n)
	}
}

// The gateway dies between the claim script and the produce: the client gets no
// answer and the claim is only in the Redis outbox, still A (never made durable). The
// settler's relay voids it past its bound - it never becomes a row, what it took is back
// on sale - and a retry with the same request id, on a gateway without the hook, is
// decided anew: one claim, one row.
func TestGatewayDiesBetweenScriptAndProduce(t *testing.T) {
	f := startFaults(t, faultOpts{
		gatewayExtra: []string{"FLASH_FAULT_EXIT_AFTER_SCRIPT=1"},
		settlerExtra: []string{"FLASH_RELAY_MIN_AGE=2s", "FLASH_RELAY_INTERVAL=200ms"},
	})
	cmp := f.campaign(f.bl, 100_000, 1, sku{"rp-50", 10, 50})
	req := claimReq{CampaignID: cmp, SKU: "rp-50", UserID: "u-1", DeviceID: "d-1", RequestID: "req-1"}

	if a := f.claim(req); a.Status != -1 {
		t.Fatalf("the hooked gateway answered %d %+v; want no answer (it exits)", a.Status, a)
	}
	testenv.Eventually(t, 10*time.Second, "the hooked gateway exits", f.gw.Exited)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if n, err := f.rdb.XLen(ctx, rkeys.Outbox(cmp)).Result(); err != nil || n != 1 {
		t.Fatalf("outbox holds %d entries (%v), want the accepted claim", n, err)
	}
	testenv.Eventually(t, 60*time.Second, "the relay voids the claim nobody was answered 200 for", func() bool {
		v, err := f.rdb.Get(ctx, rkeys.Request(cmp, "req-1")).Result()
		return err == nil && strings.HasPrefix(v, "V\t")
	})
	if n := f.rows(cmp); n != 0 {
		t.Fatalf("rows %d for the voided claim, want 0", n)
	}
	if taken := f.hgetInt(rkeys.SKU(cmp, "rp-50"), "taken"); taken != 0 {
		t.Fatalf("taken %d after the void, want 0", taken)
	}

	f.gwEnv = without(f.gwEnv, "FLASH_FAULT_EXIT_AFTER_SCRIPT")
	f.startGateway()
	a := f.claimUntilAnswered(req, 30*time.Second)
	if a.Status != 200 || a.Replayed {
		t.Fatalf("retry: %d %+v; want 200, decided anew", a.Status, a)
	}
	if n := f.settled(cmp, 30*time.Second); n != 1 {
		t.Fatalf("rows %d, want exactly 1", n)
	}
	var claimID string
	if err := f.pg.QueryRow(ctx, `SELECT claim_id FROM claims WHERE campaign_id = $1`, cmp).Scan(&claimID); err != nil || claimID != a.ClaimID {
		t.Fatalf("row %s (%v), want the retry's claim %s", claimID, err, a.ClaimID)
	}
	testenv.Eventually(t, 30*time.Second, "the outbox is trimmed once the claim is a row", func() bool {
		n, err := f.rdb.XLen(ctx, rkeys.Outbox(cmp)).Result()
		return err == nil && n == 0
	})
}

// The settler is killed with SIGKILL mid-batch during a sale and restarted: no claim is
// lost and none is written twice.
func TestSettlerKilledMidSale(t *testing.T) {
	f := startFaults(t, faultOpts{settlerExtra: []string{"FLASH_SETTLER_BATCH=20"}})
	const stock = 600
	cmp := f.campaign(f.bl, 1_000_000, 1, sku{"rp-50", stock, 50})
	wait, _ := f.sale(cmp, "rp-50", users(testenv.ID(t, "u"), 1000), 64)

	testenv.Eventually(t, 60*time.Second, "the settler writes some of the sale", func() bool { return f.rows(cmp) > 20 })
	f.st.Kill()
	t.Logf("settler killed with %d rows written", f.rows(cmp))
	time.Sleep(500 * time.Millisecond)
	f.startSettler()

	checkSale(t, f.system, cmp, stock, wait())
}

// Postgres crashes mid-sale (a private cluster stopped with -m immediate, so its
// restart replays the WAL; every connection drops): claims keep being accepted (the
// claim path does not touch Postgres), the settler retries, and afterwards nothing is
// lost or doubled.
func TestPostgresRestartedMidSale(t *testing.T) {
	pg := startPG(t)
	f := startFaults(t, faultOpts{pg: pg, settlerExtra: []string{"FLASH_SETTLER_BATCH=20", "FLASH_SETTLER_RETRY_MAX=500ms"}})
	const stock = 600
	cmp := f.campaign(f.bl, 1_000_000, 1, sku{"rp-50", stock, 50})
	wait, answered := f.sale(cmp, "rp-50", users(testenv.ID(t, "u"), 1000), 64)

	testenv.Eventually(t, 60*time.Second, "the settler writes some of the sale", func() bool { return f.rows(cmp) > 20 })
	pg.Crash()
	t.Logf("postgres crashed with %d of 1000 claims answered", answered.Load())
	time.Sleep(2 * time.Second) // the settler's batches fail and back off meanwhile
	pg.Start()

	checkSale(t, f.system, cmp, stock, wait())
}

// Redis is killed with SIGKILL during a sale and restarted from its AOF: the gateway's
// recoverer notices the new run id, fences the business line (503s, which clients
// retry), rebuilds the counters from Postgres plus the outbox, and resumes. Accepted ≤
// stock, and every 200 is a row.
func TestRedisKilledAndRestartedFromAOF(t *testing.T) {
	f := startFaults(t, faultOpts{
		gatewayExtra: []string{"FLASH_RECOVERY_INTERVAL=200ms"},
		settlerExtra: []string{"FLASH_RECOVERY_INTERVAL=200ms"},
	})
	const stock = 400
	cmp := f.campaign(f.bl, 1_000_000, 1, sku{"rp-50", stock, 50})
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	oldRunID := runID(t, ctx, f.rdb)
	wait, answered := f.sale(cmp, "rp-50", users(testenv.ID(t, "u"), 1000), 32)

	testenv.Eventually(t, 60*time.Second, "part of the sale is answered", func() bool { return answered.Load() > 150 })
	f.redis.p.Kill()
	t.Logf("redis killed with %d of 1000 claims answered", answered.Load())
	f.redis.start()

	answers := wait()
	if id := runID(t, ctx, f.rdb); id == oldRunID {
		t.Fatal("redis run id unchanged: it was not restarted")
	}
	testenv.Eventually(t, 60*time.Second, "the campaign is rebuilt (stamped with the new run id, not recovering)", func() bool {
		v, err := f.rdb.HMGet(ctx, rkeys.Meta(cmp), rkeys.FieldRunID, rkeys.FieldRecovering).Result()
		return err == nil && v[0] == runID(t, ctx, f.rdb) && v[1] == nil
	})
	checkSale(t, f.system, cmp, stock, answers)
}

func runID(t *testing.T, ctx context.Context, rdb *redis.Client) string {
	t.Helper()
	info, err := rdb.Info(ctx, "server").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "run_id:"); ok {
			return v
		}
	}
	t.Fatal("no run_id in INFO")
	return ""
}

// After a clean sale the admin API's reconciliation reports zero drift, in the
// campaign view and on /reconcile.
func TestReconciliationCleanSale(t *testing.T) {
	f := startFaults(t, faultOpts{})
	const stock = 100
	cmp := f.campaign(f.bl, 1_000_000, 1, sku{"rp-50", stock, 50})
	wait, _ := f.sale(cmp, "rp-50", users(testenv.ID(t, "u"), 300), 32)
	answers := wait()
	checkSale(t, f.system, cmp, stock, answers)

	var rep struct {
		State   string `json:"state"`
		Drift   int64  `json:"drift"`
		Rows    int64  `json:"rows_postgres"`
		Orphans int64  `json:"orphans"`
		Budget  struct {
			Drift int64 `json:"drift"`
		} `json:"budget"`
	}
	code, b := f.adminDo("GET", "/admin/v1/campaigns/"+cmp+"/reconcile", nil)
	if code != 200 || json.Unmarshal(b, &rep) != nil {
		t.Fatalf("GET reconcile: %d %s", code, b)
	}
	if rep.State != "in_sync" || rep.Drift != 0 || rep.Budget.Drift != 0 || rep.Orphans != 0 || rep.Rows != stock {
		t.Errorf("reconcile after a clean sale: %s", b)
	}
	var view struct {
		Reconciliation struct {
			State string `json:"state"`
			Drift int64  `json:"drift"`
		} `json:"reconciliation"`
	}
	code, b = f.adminDo("GET", "/admin/v1/campaigns/"+cmp, nil)
	if code != 200 || json.Unmarshal(b, &view) != nil || view.Reconciliation.State != "in_sync" || view.Reconciliation.Drift != 0 {
		t.Errorf("GET campaign reconciliation: %d %s", code, b)
	}
}

// customRedis is a Redis set-up of a test's own that startFaults points the binaries at.
type customRedis struct {
	envs []string // at least one entry
	rdb  *redis.Client
}

func (c *customRedis) env() []string {
	if c == nil {
		return nil
	}
	return c.envs
}
