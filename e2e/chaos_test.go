package e2e

// The chaos suite (issue 7): a steady open-loop load from bench's own generator
// (bench/load) spread over two gateways, one settler, and private servers started here
// on free ports (a Redis with AOF, a Postgres cluster, a dev broker with its data dir).
// One scenario at a time, each on its own campaign and at a seeded random moment of the
// load, kills (-9) and restarts one process, or stalls one with SIGSTOP/SIGCONT. After
// the load and full settlement, bench's verifier (bench/verify) checks every guarantee
// against bench's record of every 200, and the wire checks of the generator must be
// clean. Readiness is asserted while a dependency is down.
//
// Short form (go test, part of make test): every scenario once at a low rate for a few
// seconds. Long form (make chaos, FLASH_CHAOS=full): longer runs at a higher rate, every
// scenario, several rounds; the per-scenario table is written under out/chaos/<time>/
// as results.md and results.json and printed. FLASH_CHAOS_SEED reproduces a run;
// FLASH_CHAOS_RATE, FLASH_CHAOS_DURATION, FLASH_CHAOS_ROUNDS and FLASH_CHAOS_ONLY
// (a comma-separated list of scenario names) override the form's settings.

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/flashgate/flashgate/bench/load"
	"github.com/flashgate/flashgate/bench/record"
	"github.com/flashgate/flashgate/bench/setup"
	"github.com/flashgate/flashgate/bench/traffic"
	"github.com/flashgate/flashgate/bench/verify"
	"github.com/flashgate/flashgate/internal/testenv"
)

// chaosSettings is one form of the suite.
type chaosSettings struct {
	full     bool
	seed     uint64
	rate     float64
	duration time.Duration
	rounds   int
	down     time.Duration // how long a killed dependency stays down before its restart
	stall    time.Duration // how long a SIGSTOPped process stays stopped
	only     map[string]bool
}

func chaosConfig(t *testing.T) chaosSettings {
	t.Helper()
	s := chaosSettings{rate: 150, duration: 8 * time.Second, rounds: 1, down: 1500 * time.Millisecond, stall: 3 * time.Second,
		seed: uint64(time.Now().UnixNano() % 1_000_000)}
	switch v := os.Getenv("FLASH_CHAOS"); v {
	case "", "short":
	case "full":
		s.full, s.rate, s.duration, s.rounds, s.down, s.stall = true, 500, 20*time.Second, 2, 3*time.Second, 4*time.Second
	default:
		t.Fatalf("FLASH_CHAOS=%q: want short (default) or full", v)
	}
	if v := os.Getenv("FLASH_CHAOS_SEED"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("FLASH_CHAOS_SEED=%q: want a whole number", v)
		}
		s.seed = n
	}
	if v := os.Getenv("FLASH_CHAOS_RATE"); v != "" {
		r, err := load.ParseRate(v)
		if err != nil || r > 5000 {
			t.Fatalf("FLASH_CHAOS_RATE=%q: want a rate like 500/s, at most 5000/s (%v)", v, err)
		}
		s.rate = r
	}
	if v := os.Getenv("FLASH_CHAOS_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 4*time.Second || d > 10*time.Minute {
			t.Fatalf("FLASH_CHAOS_DURATION=%q: want a duration of 4s..10m", v)
		}
		s.duration = d
	}
	if v := os.Getenv("FLASH_CHAOS_ROUNDS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 20 {
			t.Fatalf("FLASH_CHAOS_ROUNDS=%q: want 1..20", v)
		}
		s.rounds = n
	}
	if v := os.Getenv("FLASH_CHAOS_ONLY"); v != "" {
		s.only = map[string]bool{}
		for _, n := range strings.Split(v, ",") {
			n = strings.TrimSpace(n)
			if scenarioByName(n) == nil {
				t.Fatalf("FLASH_CHAOS_ONLY: unknown scenario %q (want some of %s)", n, strings.Join(scenarioNames(), ", "))
			}
			s.only[n] = true
		}
	}
	return s
}

// chaosGateway is one of the two gateways.
type chaosGateway struct {
	p             *testenv.Proc
	public, admin string
	env           []string
}

// chaosStack is what the suite runs: private servers, two gateways, one settler.
type chaosStack struct {
	t           *testing.T
	redis       *privRedis
	pg          *privPG
	broker      *testenv.Proc
	brokerPort  int
	brokerDir   string
	gws         [2]*chaosGateway
	settler     *testenv.Proc
	settlerAddr string
	settlerEnv  []string
	rdb         *redis.Client
	pool        *pgxpool.Pool
}

func startChaosStack(t *testing.T) *chaosStack {
	t.Helper()
	c := &chaosStack{t: t, redis: startRedis(t), pg: startPG(t), brokerPort: testenv.FreePort(t), brokerDir: tempDir(t, "broker")}
	c.broker = startBroker(t, c.brokerDir, c.brokerPort)
	c.rdb = c.redis.client()
	c.pool = c.pg.Pool(8) // applies the migrations before any binary starts
	common := []string{"FLASH_REDIS_ADDR=" + c.redis.addr(), "FLASH_PG_URL=" + c.pg.URL(),
		"FLASH_KAFKA_BROKERS=127.0.0.1:" + strconv.Itoa(c.brokerPort), "FLASH_LOG_LEVEL=warn"}
	for i := range c.gws {
		pub, adm := testenv.FreePort(t), testenv.FreePort(t)
		g := &chaosGateway{public: "http://127.0.0.1:" + strconv.Itoa(pub), admin: "http://127.0.0.1:" + strconv.Itoa(adm)}
		// bench's bot farms vary X-Forwarded-For, believed only from trusted proxies (as
		// make bench does).
		g.env = append(append([]string{}, common...), "FLASH_HTTP_ADDR=127.0.0.1:"+strconv.Itoa(pub),
			"FLASH_ADMIN_ADDR=127.0.0.1:"+strconv.Itoa(adm), "FLASH_ADMIN_TOKEN="+adminToken,
			"FLASH_TRUSTED_PROXIES=127.0.0.1/32")
		c.gws[i] = g
		c.startGateway(i)
	}
	sp := testenv.FreePort(t)
	c.settlerAddr = "http://127.0.0.1:" + strconv.Itoa(sp)
	c.settlerEnv = append(append([]string{}, common...), "FLASH_SETTLER_ADDR=127.0.0.1:"+strconv.Itoa(sp),
		"FLASH_SETTLER_GROUP="+testenv.ID(t, "chaos-settler"))
	c.startSettler()
	return c
}

func (c *chaosStack) startGateway(i int) {
	g := c.gws[i]
	g.p = testenv.Start(c.t, testenv.Build(c.t, "./gateway"), g.env)
	g.p.WaitReady(c.t, g.admin+"/healthz")
}

func (c *chaosStack) startSettler() {
	c.settler = testenv.Start(c.t, testenv.Build(c.t, "./settler"), c.settlerEnv)
	c.settler.WaitReady(c.t, c.settlerAddr+"/healthz")
}

func (c *chaosStack) targets() string { return c.gws[0].public + "," + c.gws[1].public }

// killPG kills the private Postgres with SIGKILL - the postmaster and its backends, the
// way the OOM killer or a crash does - and waits until none of them is left. pg_ctl
// runs the postmaster in a session of its own, so its process group is exactly the
// cluster's processes.
func (c *chaosStack) killPG() {
	t := c.t
	b, err := os.ReadFile(filepath.Join(c.pg.Data(), "postmaster.pid"))
	if err != nil {
		t.Fatalf("postmaster.pid: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0]))
	if err != nil || pid <= 1 {
		t.Fatalf("postmaster.pid: bad pid %q", b)
	}
	pgid, err := syscall.Getpgid(pid)
	if err != nil || pgid != pid {
		t.Fatalf("postmaster %d is not its own process group leader (pgid %d, %v): refusing to kill a group", pid, pgid, err)
	}
	if err := syscall.Kill(-pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill -9 postgres group %d: %v", pid, err)
	}
	testenv.Eventually(t, 30*time.Second, "every postgres process is gone", func() bool {
		return syscall.Kill(-pid, 0) == syscall.ESRCH
	})
}

// scenario is one fault.
type scenario struct {
	name, what string
	// watch says whose /readyz is polled: "gateway" (the victim's, or gateway 0's), or
	// "settler". mustUnready: it must answer non-200 while the fault lasts.
	watch       string
	mustUnready bool
	// victimGateway: the fault hits one gateway (chosen by the seed); the recovery is
	// measured on its answers only.
	victimGateway bool
	// inject runs the fault and returns when the faulty part is back (restarted, or
	// SIGCONT sent): that instant is "restored".
	inject func(c *chaosStack, s chaosSettings, victim int)
}

var scenarios = []scenario{
	{name: "gateway-kill", what: "kill -9 one gateway of two, restart it", watch: "gateway", victimGateway: true,
		inject: func(c *chaosStack, s chaosSettings, v int) {
			c.gws[v].p.Kill()
			c.startGateway(v)
		}},
	{name: "settler-kill", what: "kill -9 the settler, restart it", watch: "settler", mustUnready: true,
		inject: func(c *chaosStack, s chaosSettings, _ int) {
			c.settler.Kill()
			c.startSettler()
		}},
	{name: "broker-kill", what: "kill -9 the broker, restart it on its data dir after a pause", watch: "gateway", mustUnready: true,
		inject: func(c *chaosStack, s chaosSettings, _ int) {
			c.broker.Kill()
			time.Sleep(s.down)
			c.broker = startBroker(c.t, c.brokerDir, c.brokerPort)
		}},
	{name: "redis-kill", what: "kill -9 Redis, restart it from its AOF after a pause", watch: "gateway", mustUnready: true,
		inject: func(c *chaosStack, s chaosSettings, _ int) {
			c.redis.p.Kill()
			time.Sleep(s.down)
			c.redis.start()
		}},
	{name: "postgres-kill", what: "kill -9 Postgres (postmaster and backends), restart it (WAL replay) after a pause", watch: "settler", mustUnready: true,
		inject: func(c *chaosStack, s chaosSettings, _ int) {
			c.killPG()
			time.Sleep(s.down)
			c.pg.Start()
		}},
	{name: "redis-stall", what: "SIGSTOP Redis for a few seconds, then SIGCONT", watch: "gateway", mustUnready: true,
		inject: func(c *chaosStack, s chaosSettings, _ int) {
			if err := c.redis.p.Signal(syscall.SIGSTOP); err != nil {
				c.t.Fatal(err)
			}
			time.Sleep(s.stall)
			if err := c.redis.p.Signal(syscall.SIGCONT); err != nil {
				c.t.Fatal(err)
			}
		}},
	{name: "gateway-stall", what: "SIGSTOP one gateway of two for a few seconds, then SIGCONT", watch: "gateway", victimGateway: true,
		inject: func(c *chaosStack, s chaosSettings, v int) {
			if err := c.gws[v].p.Signal(syscall.SIGSTOP); err != nil {
				c.t.Fatal(err)
			}
			time.Sleep(s.stall)
			if err := c.gws[v].p.Signal(syscall.SIGCONT); err != nil {
				c.t.Fatal(err)
			}
		}},
}

func scenarioByName(n string) *scenario {
	for i := range scenarios {
		if scenarios[i].name == n {
			return &scenarios[i]
		}
	}
	return nil
}

func scenarioNames() []string {
	var out []string
	for _, s := range scenarios {
		out = append(out, s.name)
	}
	return out
}

// chaosResult is one scenario's row of the table.
type chaosResult struct {
	Round    int    `json:"round"`
	Scenario string `json:"scenario"`
	Seed     uint64 `json:"seed"`
	Victim   string `json:"victim,omitempty"`
	// FaultAt is when the fault began, in seconds into the load; Down how long until the
	// faulty part was back (restarted, or SIGCONT).
	FaultAt float64 `json:"fault_at_s"`
	Down    float64 `json:"down_s"`
	Stock   int64   `json:"stock"`
	// SoldOut: the stock or the budget ran out during the load.
	SoldOut bool `json:"sold_out"`

	Requests int64 `json:"requests"`
	Accepted int64 `json:"accepted"`
	Replayed int64 `json:"replayed"`
	Rejected int64 `json:"rejected"`
	// Errors is every failed request of the run (503, other 5xx, no answer); Fault503
	// and FaultNoAnswer those of the affected gateway(s) due from the fault on.
	Errors        int64            `json:"errors"`
	ErrorReasons  map[string]int64 `json:"error_reasons,omitempty"`
	Fault503      int64            `json:"fault_503"`
	FaultNoAnswer int64            `json:"fault_no_answer"`
	// Latency of those 503s, ms, from when each was due: the wait a dead dependency costs.
	Lat503P50 float64 `json:"latency_503_p50_ms"`
	Lat503P99 float64 `json:"latency_503_p99_ms"`
	Lat503Max float64 `json:"latency_503_max_ms"`
	// FirstAccepted: seconds from restored to the first fresh 200 (not a replay) of the
	// affected gateway(s); -1 if none came before the load ended (or it had sold out).
	FirstAccepted float64 `json:"first_accepted_after_s"`
	// LastFailure: seconds from restored to the last 503 or no-answer of the affected
	// gateway(s) (0 if the failures ended before the restore): full recovery.
	LastFailure float64 `json:"last_failure_after_s"`
	// ReadyAfter: seconds from restored to the watched /readyz answering 200 again.
	ReadyAfter float64 `json:"ready_after_s"`
	SawUnready bool    `json:"saw_unready"`
	// GatewayUnready: gateway 0's /readyz (polled in every scenario) answered non-200
	// while the fault lasted.
	GatewayUnready bool `json:"gateway_unready"`

	// Republished: outbox entries the relay republished during the scenario (from the
	// processes' metrics); Fences and FenceSeconds: recovery fences set and lifted, and
	// how long they held in all (chaos_more_test.go).
	Republished  int64   `json:"republished"`
	Fences       int64   `json:"fences"`
	FenceSeconds float64 `json:"fence_s"`

	WireViolations int64    `json:"wire_violations"`
	SettledAfter   float64  `json:"settled_after_s"`
	Checks         int      `json:"checks"`
	Failed         []string `json:"failed,omitempty"`
	Verified       bool     `json:"verified"`
}

type obs struct {
	target    int
	status    int
	reason    string
	replayed  bool
	due, done time.Time
}

type readySample struct {
	at   time.Time
	code int
}

// pollReady samples url every 100 ms until stop is closed.
func pollReady(url string, stop <-chan struct{}) func() []readySample {
	var mu sync.Mutex
	var out []readySample
	done := make(chan struct{})
	cl := &http.Client{Timeout: 3 * time.Second}
	go func() {
		defer close(done)
		tk := time.NewTicker(100 * time.Millisecond)
		defer tk.Stop()
		for {
			at := time.Now()
			code := 0
			if resp, err := cl.Get(url); err == nil {
				code = resp.StatusCode
				resp.Body.Close()
			}
			mu.Lock()
			out = append(out, readySample{at, code})
			mu.Unlock()
			select {
			case <-stop:
				return
			case <-tk.C:
			}
		}
	}()
	return func() []readySample { <-done; return out }
}

func TestChaos(t *testing.T) {
	cs := chaosConfig(t)
	t.Logf("chaos: seed %d (FLASH_CHAOS_SEED=%d reproduces it), rate %.0f/s, %s per scenario, %d round(s), full=%v",
		cs.seed, cs.seed, cs.rate, cs.duration, cs.rounds, cs.full)
	c := startChaosStack(t)
	if mb := chaosPreloadMB(t); mb > 0 {
		keys, used := c.preload(mb)
		t.Logf("chaos: Redis preloaded with %d keys of ended campaigns (used_memory %.1f MB; FLASH_CHAOS_PRELOAD_MB=%d)", keys, float64(used)/(1<<20), mb)
	}
	var results []chaosResult
	for round := 1; round <= cs.rounds; round++ {
		for i, sc := range scenarios {
			if cs.only != nil && !cs.only[sc.name] {
				continue
			}
			seed := cs.seed*1000 + uint64(round)*100 + uint64(i)
			r := runScenario(t, c, cs, sc, round, seed, i%2 == 0)
			results = append(results, r)
			t.Logf("chaos: %s", r.line())
			if t.Failed() {
				t.Logf("chaos: stopping after the first failed scenario (%s, seed %d)", sc.name, seed)
				break
			}
		}
		if t.Failed() {
			break
		}
	}
	table := chaosTable(results)
	t.Logf("chaos results (seed %d):\n%s", cs.seed, table)
	if cs.full {
		dir := filepath.Join(testenv.ModuleRoot(t), "out", "chaos", time.Now().UTC().Format("20060102-150405"))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		head := fmt.Sprintf("# chaos run %s\n\nseed %d, rate %.0f/s, %s per scenario, %d round(s), fault downtime %s, stall %s\n\n",
			time.Now().UTC().Format(time.RFC3339), cs.seed, cs.rate, cs.duration, cs.rounds, cs.down, cs.stall)
		if err := os.WriteFile(filepath.Join(dir, "results.md"), []byte(head+table), 0o644); err != nil {
			t.Fatal(err)
		}
		b, _ := json.MarshalIndent(map[string]any{"seed": cs.seed, "rate": cs.rate, "duration": cs.duration.String(),
			"rounds": cs.rounds, "down": cs.down.String(), "stall": cs.stall.String(), "results": results}, "", "  ")
		if err := os.WriteFile(filepath.Join(dir, "results.json"), b, 0o644); err != nil {
			t.Fatal(err)
		}
		fmt.Printf("\n%s\nwritten to %s\n", table, dir)
	}
}

// runScenario runs one scenario on a fresh campaign and business line and checks
// everything; a failure names the scenario and its seed.
func runScenario(t *testing.T, c *chaosStack, cs chaosSettings, sc scenario, round int, seed uint64, sellOut bool) chaosResult {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 7))
	victim := 0
	if sc.victimGateway {
		victim = rng.IntN(2)
	}
	res := chaosResult{Round: round, Scenario: sc.name, Seed: seed, FirstAccepted: -1, ReadyAfter: -1}
	if sc.victimGateway {
		res.Victim = "gateway " + strconv.Itoa(victim)
	}
	fail := func(format string, args ...any) {
		t.Errorf("scenario %s (round %d, seed %d; FLASH_CHAOS_SEED=%d reproduces the run): %s", sc.name, round, seed,
			cs.seed, fmt.Sprintf(format, args...))
	}
	// The load: about rate × duration requests, most from distinct users; a stock of a
	// third of that sells out part-way (and a campaign budget 10% under the stock's face
	// value, so the budget binds too), ten times that never does.
	n := int64(cs.rate * cs.duration.Seconds())
	stock := n * 10
	if sellOut {
		stock = max(n*3/10, 20)
	}
	skus := []setup.SKU{{SKU: "rp-50", Stock: stock * 2 / 3, Value: 50}, {SKU: "rp-100", Stock: stock - stock*2/3, Value: 100}}
	res.Stock = stock
	face := skus[0].Stock*50 + skus[1].Stock*100
	budget := face
	if sellOut {
		budget = face * 9 / 10
	}
	ctx := context.Background()
	campaign, bl := testenv.ID(t, "chaos-"+sc.name), testenv.ID(t, "chaos-bl")
	if _, err := setup.Run(ctx, setup.Config{Admin: c.gws[0].admin, Token: adminToken, Campaign: campaign, BusinessLine: bl,
		SKUs: skus, PerUserLimit: 1, Budget: budget, BLBudget: budget, StartsIn: 0, Duration: time.Hour, VoucherTTL: 72 * time.Hour,
	}); err != nil {
		t.Fatalf("scenario %s: setup: %v", sc.name, err)
	}
	dir := t.TempDir()
	rec, err := record.Create(dir)
	if err != nil {
		t.Fatal(err)
	}
	var seen []obs
	cfg := load.Config{Target: c.targets(), Rate: cs.rate, Duration: cs.duration, Timeout: 10 * time.Second,
		Connections: int(min(max(cs.rate*8, 256), 4096)), Record: rec,
		Traffic: traffic.Config{Campaign: campaign, SKUs: []string{"rp-50", "rp-100"}, Users: int(n * 2), Seed: seed,
			Mix: traffic.Mix{Bots: 0.05, Retries: 0.10, Invalid: 0.01}},
		Observe: func(o load.Observation) {
			seen = append(seen, obs{target: o.Target, status: o.Status, reason: o.Reason, replayed: o.Replayed, due: o.Due, done: o.Done})
		}}
	type runOut struct {
		res *load.Result
		err error
	}
	loadDone := make(chan runOut, 1)
	countersBefore := c.snapCounters()
	started := time.Now()
	go func() {
		r, err := load.Run(ctx, cfg)
		loadDone <- runOut{r, err}
	}()

	readyURL := c.gws[victim].admin + "/readyz"
	if sc.watch == "settler" {
		readyURL = c.settlerAddr + "/readyz"
	}
	faultAt := time.Duration(float64(cs.duration) * (0.2 + 0.25*rng.Float64()))
	time.Sleep(time.Until(started.Add(faultAt)))
	stopPoll := make(chan struct{})
	samples := pollReady(readyURL, stopPoll)
	gwSamples := pollReady(c.gws[0].admin+"/readyz", stopPoll)
	faultStart := time.Now()
	sc.inject(c, cs, victim)
	restored := time.Now()
	res.FaultAt = faultStart.Sub(started).Seconds()
	res.Down = restored.Sub(faultStart).Seconds()

	out := <-loadDone
	if out.err != nil {
		t.Fatalf("scenario %s: load: %v", sc.name, out.err)
	}
	// Readiness must come back within a minute whatever the load did.
	testenv.WaitHTTP(t, readyURL, 60*time.Second, nil)
	close(stopPoll)
	ss := samples()
	for _, s := range gwSamples() {
		if s.code != 200 && !s.at.After(restored) {
			res.GatewayUnready = true
		}
	}
	if err := rec.Close(); err != nil {
		t.Fatal(err)
	}
	lr := out.res
	res.Requests, res.Accepted, res.Replayed, res.Rejected, res.Errors = lr.Sent, lr.Accepted, lr.Replayed, lr.Rejected, lr.Errors
	res.ErrorReasons = lr.ByReason("error")
	rej := lr.ByReason("rejected")
	res.SoldOut = rej["sold_out"]+rej["budget_exhausted"] > 0
	res.WireViolations = lr.ReplayMismatches + lr.DuplicateClaimIDs + lr.InvalidAccepted
	if lr.Violated() {
		fail("VIOLATIONS on the wire: %v", lr.Violations)
	}

	// Readiness: not ready at some point while the fault lasted, ready again after.
	for _, s := range ss {
		if s.code != 200 && !s.at.After(restored) {
			res.SawUnready = true
		}
		if s.code == 200 && s.at.After(restored) && res.ReadyAfter < 0 {
			res.ReadyAfter = s.at.Sub(restored).Seconds()
		}
	}
	if sc.mustUnready && !res.SawUnready {
		fail("%s never answered non-200 while the fault lasted (%d samples)", readyURL, len(ss))
	}
	if res.ReadyAfter < 0 {
		res.ReadyAfter = time.Since(restored).Seconds() // WaitHTTP saw it ready just now
	}

	// Recovery on the affected gateway(s): the first fresh 200 after restored, and the
	// last failure; the failures due from the fault on, with the 503s' latency.
	affected := func(o obs) bool { return !sc.victimGateway || o.target == victim }
	sort.Slice(seen, func(i, j int) bool { return seen[i].done.Before(seen[j].done) })
	var lat503 []float64
	for _, o := range seen {
		if !affected(o) {
			continue
		}
		if o.status == 200 && !o.replayed && !o.done.Before(restored) && res.FirstAccepted < 0 {
			res.FirstAccepted = o.done.Sub(restored).Seconds()
		}
		if o.due.Before(faultStart) || (o.status != 0 && o.status < 500) {
			continue
		}
		res.LastFailure = max(res.LastFailure, o.done.Sub(restored).Seconds())
		if o.status == 503 {
			res.Fault503++
			lat503 = append(lat503, float64(o.done.Sub(o.due))/1e6)
		} else if o.status == 0 {
			res.FaultNoAnswer++
		}
	}
	if len(lat503) > 0 {
		sort.Float64s(lat503)
		q := func(p float64) float64 { return lat503[min(len(lat503)-1, int(math.Ceil(p*float64(len(lat503))))-1)] }
		res.Lat503P50, res.Lat503P99, res.Lat503Max = q(0.5), q(0.99), lat503[len(lat503)-1]
	}
	if lr.Accepted == 0 {
		fail("nothing accepted during the whole load")
	}

	// Full settlement, then every guarantee against bench's record of every 200.
	entries, err := record.Read(dir)
	if err != nil {
		t.Fatal(err)
	}
	if entries == nil {
		entries = []record.Entry{}
	}
	vctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	rep, err := verify.Run(vctx, c.rdb, c.pool, verify.Config{Campaign: campaign, Record: entries, Wait: 180 * time.Second})
	if err != nil {
		t.Fatalf("scenario %s (seed %d): verify: %v", sc.name, seed, err)
	}
	res.SettledAfter, res.Checks, res.Verified = rep.SettledAfter, len(rep.Checks), rep.Held
	for _, ch := range rep.Checks {
		if !ch.Pass {
			res.Failed = append(res.Failed, ch.Name+": "+ch.Detail)
		}
	}
	if !rep.Held {
		var b strings.Builder
		rep.Print(&b)
		fail("bench verify FAILED:\n%s", b.String())
	}
	checkFencesAndRepublish(&res, sc, countersBefore, c.snapCounters(), fail)
	return res
}

func (r chaosResult) line() string {
	return fmt.Sprintf("round %d %-13s seed %d: fault at %.1fs for %.1fs; %d requests, %d accepted, sold out %v; "+
		"errors %d %v (fault window: %d×503, %d no answer; 503 latency p50 %.0fms p99 %.0fms max %.0fms); first fresh 200 %+.2fs, last failure %+.2fs, "+
		"ready %+.2fs; settled %.1fs; republished %d; fences %s; verify %s",
		r.Round, r.Scenario, r.Seed, r.FaultAt, r.Down, r.Requests, r.Accepted, r.SoldOut, r.Errors, r.ErrorReasons, r.Fault503, r.FaultNoAnswer,
		r.Lat503P50, r.Lat503P99, r.Lat503Max, r.FirstAccepted, r.LastFailure, r.ReadyAfter, r.SettledAfter, r.Republished, fenceCell(r), verdict(r))
}

func verdict(r chaosResult) string {
	if r.Verified && r.WireViolations == 0 {
		return fmt.Sprintf("PASS (%d checks)", r.Checks)
	}
	return fmt.Sprintf("FAIL (%d wire violations; %s)", r.WireViolations, strings.Join(r.Failed, "; "))
}

// chaosTable is the markdown table of RELIABILITY.md.
func chaosTable(rs []chaosResult) string {
	var b strings.Builder
	b.WriteString("| round | scenario | seed | fault at / down | requests | accepted | sold out | errors (whole run) | fault window: 503 / no answer | 503 latency p50 / p99 / max | first fresh 200 after restore | last failure after restore | /readyz 200 after restore | not ready seen (watched / gateway 0) | settled after | republished | fences (count, held) | verify |\n")
	b.WriteString("| --- | --- | --- | --- | ---: | ---: | --- | ---: | --- | --- | --- | --- | --- | --- | --- | ---: | --- | --- |\n")
	for _, r := range rs {
		first := "none in the run"
		if r.FirstAccepted >= 0 {
			first = fmt.Sprintf("%.2f s", r.FirstAccepted)
		} else if r.SoldOut {
			first = "none (sold out)"
		}
		last := "none after"
		if r.Fault503+r.FaultNoAnswer == 0 {
			last = "not interrupted"
		} else if r.LastFailure > 0 {
			last = fmt.Sprintf("%.2f s", r.LastFailure)
		}
		name := r.Scenario
		if r.Victim != "" {
			name += " (" + r.Victim + ")"
		}
		fmt.Fprintf(&b, "| %d | %s | %d | %.1f s / %.1f s | %d | %d | %v | %d | %d / %d | %.0f / %.0f / %.0f ms | %s | %s | %.2f s | %s / %s | %.1f s | %d | %s | %s |\n",
			r.Round, name, r.Seed, r.FaultAt, r.Down, r.Requests, r.Accepted, yesNo(r.SoldOut), r.Errors, r.Fault503, r.FaultNoAnswer,
			r.Lat503P50, r.Lat503P99, r.Lat503Max, first, last, r.ReadyAfter, yesNo(r.SawUnready), yesNo(r.GatewayUnready), r.SettledAfter,
			r.Republished, fenceCell(r), verdict(r))
	}
	return b.String()
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
