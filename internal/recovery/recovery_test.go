package recovery_test

import (
	"context"
	"encoding/json"
	"fmt"

	"io"
	"log/slog"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flashgate/flashgate/internal/claim"
	"github.com/flashgate/flashgate/internal/kafkaopt"
	"github.com/flashgate/flashgate/internal/reconcile"
	"github.com/flashgate/flashgate/internal/recovery"
	"github.com/flashgate/flashgate/internal/risk/riskstate"
	"github.com/flashgate/flashgate/internal/rkeys"
	"github.com/flashgate/flashgate/internal/testenv"
	"github.com/flashgate/flashgate/settler/relay"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func adminClient(t *testing.T) *kgo.Client {
	t.Helper()
	testenv.RequireBroker(t)
	kcl, err := kgo.NewClient(kgo.SeedBrokers(testenv.Brokers()...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kcl.Close)
	return kcl
}

// newRecoverer watches only the business line of the test (the database is shared:
// every other test's campaigns are in it, and a private Redis knows none of them).
func newRecoverer(t *testing.T, rdb *redis.Client, e *testenv.Env, bl string, cu recovery.CatchUp) *recovery.Recoverer {
	t.Helper()
	r, err := recovery.New(recovery.Config{Interval: 50 * time.Millisecond, ListEvery: 50 * time.Millisecond,
		CatchUpTimeout: 20 * time.Second, BusinessLines: []string{bl}}, rdb, e.PG, cu, quiet, nil)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// counters are every live figure a rebuild writes, for exact comparison.
func counters(t *testing.T, rdb *redis.Client, c *testenv.Campaign, skus ...string) string {
	t.Helper()
	ctx := testenv.Ctx(t, 5*time.Second)
	var b strings.Builder
	meta, err := rdb.HMGet(ctx, rkeys.Meta(c.ID), "spent", "taken", recovery.FieldReleased).Result()
	if err != nil {
		t.Fatal(err)
	}
	zero := func(v any) any {
		if v == nil {
			return "0"
		}
		return v
	}
	fmt.Fprintf(&b, "meta spent=%v taken=%v released=%v\n", meta[0], meta[1], zero(meta[2]))
	for _, s := range skus {
		v, err := rdb.HMGet(ctx, rkeys.SKU(c.ID, s), "stock", "taken", "total").Result()
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "%s stock=%v taken=%v total=%v\n", s, v[0], v[1], v[2])
	}
	users, err := rdb.HGetAll(ctx, rkeys.Users(c.ID)).Result()
	if err != nil {
		t.Fatal(err)
	}
	keys := make([]string, 0, len(users))
	for k := range users {
		keys = append(keys, k+"="+users[k])
	}
	sort.Strings(keys)
	fmt.Fprintf(&b, "users %s\n", strings.Join(keys, ","))
	bl, err := rdb.HMGet(ctx, rkeys.BusinessLine(c.BusinessLine), "budget", "spent").Result()
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(&b, "business line budget=%v spent=%v", bl[0], bl[1])
	return b.String()
}

func try(t *testing.T, rdb *redis.Client, c *testenv.Campaign, sku, user, rq string) testenv.Accepted {
	t.Helper()
	a, err := testenv.ScriptClaim(testenv.Ctx(t, 5*time.Second), rdb, c.ID, sku, user, rq)
	if err != nil {
		t.Fatalf("claim %s: %v", rq, err)
	}
	return a
}

// Redis lost everything (a private redis-server, flushed: a restart without its AOF).
// Some claims were rows, two were only in Kafka (the settler behind), one only in the
// outbox of a gateway that died before producing (never promised: lost with Redis).
// Recovery waits for the settler, then rebuilds exactly the counters of the books:
// accepted = rows, stock = total − rows, spent, per-user counts, the business line; a
// retry of an accepted request_id gets its claim back; the campaign then sells exactly
// its remaining stock.
func TestRecoverLostCampaign(t *testing.T) {
	base := testenv.New(t)
	ctx := testenv.Ctx(t, 90*time.Second)
	pr := startPrivateRedis(t)
	e := base.With(pr.client())
	const stock = 8
	c := e.Campaign(testenv.Spec{SKUs: []testenv.SKU{{SKU: "rp-50", Stock: stock, Value: 50}}})
	st := testenv.NewSettler(t, e.RDB, e.PG, c.ID) // not consuming yet: the settler is behind
	kcl := testenv.Producer(t)

	var accepted []testenv.Accepted
	for i := 0; i < 6; i++ {
		accepted = append(accepted, try(t, e.RDB, c, "rp-50", fmt.Sprintf("u-%d", i), fmt.Sprintf("rq-%d", i)))
	}
	recs, err := testenv.OutboxRecords(ctx, e.RDB, c.ID)
	if err != nil || len(recs) != 6 {
		t.Fatalf("outbox %d, %v", len(recs), err)
	}
	// 0-2 are rows; 3-4 are in Kafka only; 5 was never produced.
	if _, err := testenv.Write(ctx, e.RDB, e.PG, recs[:3], -1, nil); err != nil {
		t.Fatal(err)
	}
	if err := testenv.ProduceDurable(ctx, e.RDB, kcl, recs[3:5]...); err != nil {
		t.Fatal(err)
	}
	if err := e.RDB.FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}

	rec := newRecoverer(t, e.RDB, e, c.BusinessLine, &recovery.KafkaCatchUp{Client: adminClient(t), Group: st.Group, Topic: kafkaopt.ClaimsTopic})
	found, err := rec.Detect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var reasons []string
	for _, f := range found {
		if f.BusinessLine == c.BusinessLine {
			reasons = append(reasons, f.Reason)
		}
	}
	sort.Strings(reasons)
	if strings.Join(reasons, ",") != "budget_missing,lost" {
		t.Fatalf("findings for the business line: %v; want lost and budget_missing", reasons)
	}

	// The settler catches up only after the recovery started waiting for it.
	go func() {
		time.Sleep(300 * time.Millisecond)
		st.Start()
	}()
	out, err := rec.RecoverBusinessLine(ctx, c.BusinessLine)
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Campaigns) != 1 || out.Campaigns[0].Rows != 5 || out.Campaigns[0].InFlight != 0 || out.Spent != 250 {
		t.Fatalf("outcome %+v", out)
	}
	want := fmt.Sprintf("meta spent=250 taken=5 released=0\nrp-50 stock=%d taken=5 total=%d\nusers u-0=1,u-1=1,u-2=1,u-3=1,u-4=1\n"+
		"business line budget=1000000000 spent=250", stock-5, stock)
	if got := counters(t, e.RDB, c, "rp-50"); got != want {
		t.Fatalf("rebuilt counters:\n%s\nwant:\n%s", got, want)
	}
	if ok, _ := e.RDB.SIsMember(ctx, rkeys.Campaigns, c.ID).Result(); !ok {
		t.Fatal("campaign not back in the set of campaigns")
	}
	if f, err := rec.Detect(ctx); err != nil || len(filter(f, c.BusinessLine)) != 0 {
		t.Fatalf("after recovery: findings %v, %v; want none", filter(f, c.BusinessLine), err)
	}
	// A retry of a settled request_id gets its claim back, not a second claim.
	for i := 0; i < 5; i++ {
		a := try(t, e.RDB, c, "rp-50", fmt.Sprintf("u-%d", i), fmt.Sprintf("rq-%d", i))
		if a.Code != claim.CodeAccepted || a.ClaimID != accepted[i].ClaimID {
			t.Fatalf("retry rq-%d: code %d claim %s; want the original %s", i, a.Code, a.ClaimID, accepted[i].ClaimID)
		}
	}
	// The never-produced claim was lost with Redis (its client never heard 200): its
	// retry is decided afresh - but not before the risk state is back too (a pass,
	// Once, rebuilds it first; RecoverBusinessLine alone does not): until then a new
	// decision is NOT_WARM and takes nothing.
	if a := try(t, e.RDB, c, "rp-50", "u-5", "rq-5"); a.Code != claim.CodeNotWarm {
		t.Fatalf("a new claim before the risk state is rebuilt: %+v; want NOT_WARM", a)
	}
	runID, err := recovery.RunID(ctx, e.RDB)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := riskstate.Ensure(ctx, e.PG, e.RDB, runID); err != nil {
		t.Fatal(err)
	}
	if a := try(t, e.RDB, c, "rp-50", "u-5", "rq-5"); a.Code != claim.CodeAccepted || a.ClaimID == accepted[5].ClaimID {
		t.Fatalf("retry of the unpromised claim: %+v", a)
	}
	// Exactly the remaining stock sells.
	sold := 1
	for i := 100; i < 110; i++ {
		if a := try(t, e.RDB, c, "rp-50", fmt.Sprintf("u-%d", i), fmt.Sprintf("rq-%d", i)); a.Code == claim.CodeAccepted {
			sold++
		}
	}
	if sold != stock-5 {
		t.Fatalf("sold %d after recovery, want the remaining %d", sold, stock-5)
	}
}

func filter(fs []recovery.Finding, bl string) []recovery.Finding {
	var out []recovery.Finding
	for _, f := range fs {
		if f.BusinessLine == bl {
			out = append(out, f)
		}
	}
	return out
}

// privateRedis is a redis-server of this test's own, with an AOF directory, that the
// test may kill -9 and restart (the shared dev-stack Redis is never touched).
type privateRedis struct {
	t    *testing.T
	bin  string
	args []string
	proc *testenv.Proc
	addr string
}

func startPrivateRedis(t *testing.T) *privateRedis {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("redis-server not found (make up installs it): %v", err)
	}
	port := testenv.FreePort(t)
	p := &privateRedis{t: t, bin: bin, addr: "127.0.0.1:" + strconv.Itoa(port),
		args: []string{"--bind", "127.0.0.1", "--port", strconv.Itoa(port), "--dir", t.TempDir(),
			"--appendonly", "yes", "--appendfsync", "everysec", "--save", ""}}
	p.start()
	return p
}

func (p *privateRedis) start() {
	p.t.Helper()
	p.proc = testenv.Start(p.t, p.bin, nil, p.args...)
	rdb := redis.NewClient(&redis.Options{Addr: p.addr})
	defer rdb.Close()
	testenv.Eventually(p.t, 10*time.Second, "private redis answers", func() bool {
		return rdb.Ping(context.Background()).Err() == nil
	})
}

func (p *privateRedis) client() *redis.Client {
	rdb := redis.NewClient(&redis.Options{Addr: p.addr, DialTimeout: time.Second, ReadTimeout: 2 * time.Second,
		WriteTimeout: 2 * time.Second, MaxRetries: -1})
	p.t.Cleanup(func() { rdb.Close() })
	return rdb
}

// Redis is killed with kill -9 and restarted from its AOF. The changed run id is
// noticed; while the business line is fenced a claim is refused with NOT_WARM (503,
// nothing taken); the rebuild restores exactly the counters of the books - here also
// undoing a simulated loss of the last second's writes (AOF everysec after a machine
// crash), which would otherwise let two more units be sold than the stock.
func TestRecoverAfterRestart(t *testing.T) {
	base := testenv.New(t)
	ctx := testenv.Ctx(t, 90*time.Second)
	pr := startPrivateRedis(t)
	rdb := pr.client()
	e := base.With(rdb)
	const stock = 6
	c := e.Campaign(testenv.Spec{SKUs: []testenv.SKU{{SKU: "rp-50", Stock: stock, Value: 50}}})
	for i := 0; i < 4; i++ {
		if a := try(t, rdb, c, "rp-50", fmt.Sprintf("u-%d", i), fmt.Sprintf("rq-%d", i)); a.Code != claim.CodeAccepted {
			t.Fatalf("claim %d: %+v", i, a)
		}
	}
	if _, err := testenv.SettleOutbox(ctx, rdb, e.PG, c.ID); err != nil {
		t.Fatal(err)
	}
	g := testenv.NewGate()
	rec := newRecoverer(t, rdb, e, c.BusinessLine, g)
	if f, err := rec.Detect(ctx); err != nil || len(filter(f, c.BusinessLine)) != 0 {
		t.Fatalf("first sight: %v %v; want no findings (the campaign is stamped)", f, err)
	}
	before := counters(t, rdb, c, "rp-50")

	pr.proc.Kill()
	pr.start()
	// What a lost last second looks like: two accepted claims (rows in Postgres) gone
	// from the counters, the per-user counts and the idempotency records.
	pipe := rdb.TxPipeline()
	pipe.HIncrBy(ctx, rkeys.SKU(c.ID, "rp-50"), "stock", 2)
	pipe.HIncrBy(ctx, rkeys.SKU(c.ID, "rp-50"), "taken", -2)
	pipe.HIncrBy(ctx, rkeys.Meta(c.ID), "taken", -2)
	pipe.HIncrBy(ctx, rkeys.Meta(c.ID), "spent", -100)
	pipe.HIncrBy(ctx, rkeys.BusinessLine(c.BusinessLine), "spent", -100)
	pipe.HDel(ctx, rkeys.Users(c.ID), "u-2", "u-3")
	pipe.Del(ctx, rkeys.Request(c.ID, "rq-2"), rkeys.Request(c.ID, "rq-3"))
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}

	f, err := rec.Detect(ctx)
	if err != nil || len(filter(f, c.BusinessLine)) != 1 || filter(f, c.BusinessLine)[0].Reason != "restarted" {
		t.Fatalf("after restart: %v %v; want restarted", f, err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := rec.RecoverBusinessLine(ctx, c.BusinessLine)
		done <- err
	}()
	<-g.Entered
	// Fenced: a claim is refused without taking anything, and not remembered.
	fenced := counters(t, rdb, c, "rp-50")
	if a := try(t, rdb, c, "rp-50", "u-9", "rq-9"); a.Code != claim.CodeNotWarm {
		t.Fatalf("claim while fenced: code %d, want NOT_WARM %d", a.Code, claim.CodeNotWarm)
	}
	if got := counters(t, rdb, c, "rp-50"); got != fenced {
		t.Fatalf("a fenced claim changed counters:\n%s\nwas:\n%s", got, fenced)
	}
	if n, _ := rdb.Exists(ctx, rkeys.Request(c.ID, "rq-9")).Result(); n != 0 {
		t.Fatal("a fenced claim left an idempotency record")
	}
	close(g.Open)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := counters(t, rdb, c, "rp-50"); got != before {
		t.Fatalf("after recovery:\n%s\nwant (before the restart):\n%s", got, before)
	}
	if f, err := rec.Detect(ctx); err != nil || len(filter(f, c.BusinessLine)) != 0 {
		t.Fatalf("after recovery: findings %v %v", f, err)
	}
	// The lost records are back: the retry of rq-2 is its original claim.
	var orig string
	if err := e.PG.QueryRow(ctx, `SELECT claim_id FROM claims WHERE campaign_id = $1 AND request_id = 'rq-2'`, c.ID).Scan(&orig); err != nil {
		t.Fatal(err)
	}
	if a := try(t, rdb, c, "rp-50", "u-2", "rq-2"); a.ClaimID != orig {
		t.Fatalf("retry of rq-2 after recovery: %+v, want claim %s", a, orig)
	}
	// No oversell: the two units the lost second would have resold are not for sale.
	sold := 0
	for i := 10; i < 20; i++ {
		if a := try(t, rdb, c, "rp-50", fmt.Sprintf("u-%d", i), fmt.Sprintf("rq-%d", i)); a.Code == claim.CodeAccepted {
			sold++
		}
	}
	if sold != stock-4 {
		t.Fatalf("sold %d after recovery, want %d", sold, stock-4)
	}
}

// A sale during which Redis is killed with kill -9 and restarted from its AOF, with the
// recoverer, the settler and clients that retry with the same request_id running all
// along: afterwards accepted ≤ stock, every promised claim (acknowledged by the broker:
// the gateway's 200) is a row, and the counters reconcile with the books.
func TestSaleAcrossRedisRestart(t *testing.T) {
	base := testenv.New(t)
	ctx := testenv.Ctx(t, 120*time.Second)
	pr := startPrivateRedis(t)
	rdb := pr.client()
	e := base.With(rdb)
	const stock, users = 30, 60
	c := e.Campaign(testenv.Spec{SKUs: []testenv.SKU{{SKU: "rp-50", Stock: stock, Value: 50}}})
	st := testenv.StartSettler(t, rdb, e.PG, c.ID)
	kcl := testenv.Producer(t)
	rec := newRecoverer(t, rdb, e, c.BusinessLine, &recovery.KafkaCatchUp{Client: adminClient(t), Group: st.Group, Topic: kafkaopt.ClaimsTopic})
	if _, err := rec.Once(ctx); err != nil { // first sight: stamp
		t.Fatal(err)
	}
	rid0, err := recovery.RunID(ctx, rdb)
	if err != nil {
		t.Fatal(err)
	}
	// A claim whose script ran but whose reply was lost with Redis is only in the
	// outbox: the relay publishes it, as in production.
	rl, err := relay.New(relay.Config{MinAge: 200 * time.Millisecond, Interval: 50 * time.Millisecond}, rdb, e.PG, kcl, quiet, nil)
	if err != nil {
		t.Fatal(err)
	}
	rctx, stop := context.WithCancel(ctx)
	recDone := make(chan struct{}, 2)
	go func() { _ = rec.Run(rctx); recDone <- struct{}{} }()
	go func() { _ = rl.Run(rctx); recDone <- struct{}{} }()

	var mu sync.Mutex
	promised := map[string]string{} // request → claim answered 200
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := w; i < users; i += 4 {
				rq, user := fmt.Sprintf("rq-%d", i), fmt.Sprintf("u-%d", i)
				for ctx.Err() == nil {
					a, err := testenv.ScriptClaim(ctx, rdb, c.ID, "rp-50", user, rq)
					if err != nil || a.Code == claim.CodeNotWarm || a.Code == claim.CodeInFlight || a.Code == claim.CodeUnknownCampaign {
						time.Sleep(20 * time.Millisecond) // 503: the client retries the same request_id
						continue
					}
					if a.Code != claim.CodeAccepted {
						break // a business answer (sold out)
					}
					if !a.Replayed {
						// The gateway's produce; 200 only once the broker has it.
						r := claim.Record{Version: claim.Version, ClaimID: a.ClaimID, RequestID: rq, CampaignID: c.ID,
							BusinessLine: c.BusinessLine, SKU: "rp-50", UserID: user, DeviceID: "d-" + user, IP: "127.0.0.1",
							Value: a.Value, ClaimedAtMs: a.ClaimedAtMs, ExpiresAtMs: a.ExpiresAtMs, OutboxID: a.OutboxID}
						if err := testenv.ProduceDurable(ctx, rdb, kcl, r); err != nil {
							// Redis went away around the durable mark: the answer is unknown
							// to this client, which retries.
							time.Sleep(20 * time.Millisecond)
							continue
						}
					}
					mu.Lock()
					promised[rq] = a.ClaimID
					mu.Unlock()
					break
				}
				time.Sleep(10 * time.Millisecond) // spread the sale over the restart and the recovery
				if w == 0 && i == 12 {            // worker 0 takes every 4th user
					pr.proc.Kill() // mid-sale
					pr.start()
				}
			}
		}(w)
	}
	wg.Wait()
	rid1, err := recovery.RunID(ctx, rdb)
	if err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, "the restart is noticed and the campaign rebuilt", func() bool {
		stamp, _ := rdb.HGet(ctx, rkeys.Meta(c.ID), recovery.FieldRunID).Result()
		return stamp == rid1 && rid1 != rid0
	})
	testenv.Eventually(t, 30*time.Second, "every promised claim is a row", func() bool {
		var n int
		_ = e.PG.QueryRow(ctx, `SELECT count(*) FROM claims WHERE campaign_id = $1`, c.ID).Scan(&n)
		return n >= len(promised)
	})
	stop()
	<-recDone
	<-recDone
	rows, err := e.PG.Query(ctx, `SELECT request_id, claim_id FROM claims WHERE campaign_id = $1`, c.ID)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for rows.Next() {
		var rq, id string
		if err := rows.Scan(&rq, &id); err != nil {
			t.Fatal(err)
		}
		got[rq] = id
	}
	rows.Close()
	if len(got) > stock {
		t.Fatalf("%d rows for a stock of %d: oversold", len(got), stock)
	}
	for rq, id := range promised {
		if got[rq] != id {
			t.Fatalf("promised %s → %s, row has %q", rq, id, got[rq])
		}
	}
	t.Logf("promised %d, rows %d, stock %d", len(promised), len(got), stock)
	rc, err := reconcile.New(reconcile.Config{}, reconcile.Deps{Redis: rdb, PG: e.PG, Log: quiet})
	if err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 20*time.Second, "the counters reconcile with the books", func() bool {
		r, err := rc.Campaign(ctx, c.ID)
		if err != nil {
			return false
		}
		if r.State != reconcile.StateInSync {
			j, _ := json.Marshal(r)
			t.Logf("reconciliation: %s", j)
		}
		return r.State == reconcile.StateInSync
	})
}
