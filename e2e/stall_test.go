package e2e

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/flashgate/flashgate/internal/faultproxy"
	"github.com/flashgate/flashgate/internal/testenv"
)

// Stalls and partitions (issue 21): faults that kill no process, between a binary and
// a real server - packets black-holed, answers lost after the server acted, a broker
// that takes produces and never acknowledges them, Postgres unreachable for the
// settler. Each runs a sale through the fault and checks that every wait stays
// bounded, that a claim answered 503 took nothing, that the guarantees hold once
// settled, and logs requests, 503s, time to recover and the 503 window
// (RELIABILITY.md, Stalls and partitions). Short form: a 1.5 s fault, a few seconds.

const stallHold = 1500 * time.Millisecond

func newProxy(t *testing.T, target string) *faultproxy.Proxy {
	t.Helper()
	p, err := faultproxy.New(target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// oneShot is a claim tried once during a fault and never retried, with how long its
// answer took.
type oneShot struct {
	req  claimReq
	resp claimResp
	took time.Duration
}

// fireOneShots sends n claims of fresh users concurrently, once each.
func (s *system) fireOneShots(campaign string, n int) []oneShot {
	out := make([]oneShot, n)
	var wg sync.WaitGroup
	prefix := testenv.ID(s.t, "once")
	for i := range out {
		wg.Go(func() {
			u := prefix + "-" + strconv.Itoa(i)
			out[i].req = claimReq{CampaignID: campaign, SKU: "rp-50", UserID: u, DeviceID: "dev-" + u, RequestID: "req-" + u}
			start := time.Now()
			out[i].resp = s.claim(out[i].req)
			out[i].took = time.Since(start)
		})
	}
	wg.Wait()
	return out
}

// stallResult is what runStall measured.
type stallResult struct {
	answers []claimResp
	fig     faultFigures
	shots   []oneShot
}

// runStall runs a sale of 1000 users (32 at a time, retrying 503s) on cmp, applies
// fault once part of it is answered, fires 16 one-shot claims during the fault, holds
// it stallHold, restores, and waits for the sale to be answered.
func runStall(t *testing.T, f *faultSys, cmp string, fault, restore func()) stallResult {
	t.Helper()
	wait, atts, answered := f.timedSale(cmp, "rp-50", users(testenv.ID(t, "u"), 1000), 32)
	testenv.Eventually(t, 60*time.Second, "part of the sale is answered", func() bool { return answered() > 100 })
	fault()
	at := time.Now()
	shots := f.fireOneShots(cmp, 16)
	if rest := stallHold - time.Since(at); rest > 0 {
		time.Sleep(rest)
	}
	restore()
	restored := time.Now()
	t.Logf("fault held %s", restored.Sub(at).Round(time.Millisecond))
	r := stallResult{answers: wait(), fig: figures(atts(), at, restored), shots: shots}
	return r
}

// checkOneShots: each one-shot claim was answered within bound; those answered 503
// took nothing (no row once everything settled, and a retry now is accepted as new or
// refused for a reason, never replayed as a claim it was not given).
func checkOneShots(t *testing.T, f *faultSys, cmp string, shots []oneShot, bound time.Duration) (unavailable int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var reqs map[string]bool
	for _, s := range shots {
		if s.took > bound {
			t.Errorf("one-shot claim %s waited %s for its answer (%d), more than %s", s.req.RequestID, s.took, s.resp.Status, bound)
		}
		if s.resp.Status != 503 && s.resp.Status != -1 {
			continue
		}
		unavailable++
		if reqs == nil {
			reqs = requestIDsInPG(t, ctx, f, cmp)
		}
		if reqs[s.req.RequestID] {
			t.Errorf("one-shot claim %s was answered %d (%s) but became a row: a 503 took stock", s.req.RequestID, s.resp.Status, s.resp.Error)
		}
	}
	return unavailable
}

func requestIDsInPG(t *testing.T, ctx context.Context, f *faultSys, cmp string) map[string]bool {
	t.Helper()
	return testenv.Set(t, f.pg, `SELECT request_id FROM claims WHERE campaign_id = $1`, cmp)
}

// redisBehindProxy is a private redis-server that the settler reaches directly and
// the gateway through a fault proxy.
func redisBehindProxy(t *testing.T) (*customRedis, *faultproxy.Proxy) {
	rs := startRedis(t)
	p := newProxy(t, rs.addr())
	return &customRedis{envs: []string{"FLASH_REDIS_ADDR=" + rs.addr()}, rdb: rs.client()}, p
}

// TestRedisBlackholedForTheGateway: the gateway's packets to Redis are dropped (no RST)
// for 1.5 s mid-sale. Claims answer 503 within the Redis timeout's bound, nothing a
// 503 answered is taken, and claims are accepted again right after.
func TestRedisBlackholedForTheGateway(t *testing.T) {
	redisRefusedForTheGateway(t, "black-holed", faultproxy.Blackhole)
}

// redisRefusedForTheGateway puts the proxy between the gateway and Redis in mode for a
// while mid-sale: claims answer 503 within the Redis timeout's bound, the fault must
// refuse some one-shot claims, none of which may have taken anything, every guarantee
// of the sale holds, and claims are accepted again after the fault.
func redisRefusedForTheGateway(t *testing.T, what string, mode faultproxy.Mode) {
	t.Helper()
	cr, p := redisBehindProxy(t)
	f := startFaults(t, faultOpts{redis: cr, pg: startPG(t), gatewayExtra: []string{"FLASH_REDIS_ADDR=" + p.Addr()}})
	const stock = 400
	cmp := f.campaign(f.bl, 1_000_000, 1, sku{"rp-50", stock, 50})
	r := runStall(t, f, cmp, func() { p.Set(mode) }, func() { p.Set(faultproxy.Forward) })
	t.Logf("redis %s for the gateway: %s", what, r.fig)
	checkSale(t, f.system, cmp, stock, r.answers)
	if n := checkOneShots(t, f, cmp, r.shots, 5*time.Second); n == 0 {
		t.Errorf("no one-shot claim was refused while Redis was %s: the fault did not bite", what)
	}
	if r.fig.slowest > 6*time.Second {
		t.Errorf("a claim waited %s: waits are not bounded by the Redis timeout", r.fig.slowest)
	}
	if r.fig.recover < 0 {
		t.Fatal("no claim accepted after the fault")
	}
}

// TestRedisAnswersLostForTheGateway: Redis receives and runs the gateway's script
// calls but its answers are dropped for 1.5 s (the case of issue 21's "a script call
// that timed out after Redis ran it"). A claim answered 503 must still have taken
// nothing.
//
// Issue 21.3: before the durable answers (DESIGN.md "What is durable when") 16 of 16
// one-shot claims answered 503 became rows (the script ran, its answer was lost, the
// claim stayed accepted and the relay published it). Now such a claim is voided by the
// gateway, or stays A and is voided by the relay past MinAge: never a row.
func TestRedisAnswersLostForTheGateway(t *testing.T) {
	cr, p := redisBehindProxy(t)
	f := startFaults(t, faultOpts{redis: cr, pg: startPG(t), gatewayExtra: []string{"FLASH_REDIS_ADDR=" + p.Addr()}})
	const stock = 400
	cmp := f.campaign(f.bl, 1_000_000, 1, sku{"rp-50", stock, 50})
	r := runStall(t, f, cmp, func() { p.Set(faultproxy.DropResponses) }, func() { p.Set(faultproxy.Forward) })
	t.Logf("redis answers lost for the gateway: %s", r.fig)
	checkSale(t, f.system, cmp, stock, r.answers)
	if n := checkOneShots(t, f, cmp, r.shots, 5*time.Second); n == 0 {
		t.Error("no one-shot claim was refused while Redis's answers were lost: the fault did not bite")
	} else {
		t.Logf("%d of %d one-shot claims answered 503, none a row", n, len(r.shots))
	}
	if r.fig.slowest > 6*time.Second {
		t.Errorf("a claim waited %s: waits are not bounded by the Redis timeout", r.fig.slowest)
	}
}

// TestRedisHalfOpenForTheGateway: every connection between the gateway and Redis goes
// half-open for 1.5 s mid-sale (Redis sees them closed; the gateway's side stays open and
// silent, as after a peer that vanished without a FIN), and new ones are accepted but
// never reach Redis. After the fault the old connections stay dead for good: the gateway
// must notice by its read timeouts and dial again. Waits stay bounded, a claim answered
// 503 took nothing, and claims are accepted again after the fault.
func TestRedisHalfOpenForTheGateway(t *testing.T) {
	redisRefusedForTheGateway(t, "half-open", faultproxy.HalfOpen)
}

// TestRedisLatencyForTheGateway: 150 ms more each way between the gateway and Redis
// for the fault's duration. That is inside the 1 s Redis timeout: claims slow down but
// none is refused, and no answer waits past the timeout's bound.
func TestRedisLatencyForTheGateway(t *testing.T) {
	cr, p := redisBehindProxy(t)
	f := startFaults(t, faultOpts{redis: cr, pg: startPG(t), gatewayExtra: []string{"FLASH_REDIS_ADDR=" + p.Addr()}})
	const stock = 400
	cmp := f.campaign(f.bl, 1_000_000, 1, sku{"rp-50", stock, 50})
	r := runStall(t, f, cmp, func() { p.SetLatency(150 * time.Millisecond) }, func() { p.SetLatency(0) })
	t.Logf("redis +150ms each way for the gateway: %s", r.fig)
	checkSale(t, f.system, cmp, stock, r.answers)
	checkOneShots(t, f, cmp, r.shots, 5*time.Second)
	if r.fig.unavailable != 0 {
		t.Errorf("%d claims answered 503 with Redis slower but inside its timeout", r.fig.unavailable)
	}
	if r.fig.slowest > 3*time.Second {
		t.Errorf("a claim waited %s", r.fig.slowest)
	}
}

// TestPostgresBlackholedForTheSettler: the settler's packets to Postgres are dropped
// for 1.5 s mid-sale. Claims never notice (Postgres is off the claim path: no 503),
// the settler holds its batch (no commit past an unwritten claim) and reports not
// ready, and once Postgres is back everything settles.
func TestPostgresBlackholedForTheSettler(t *testing.T) {
	pg := startPG(t)
	u := pg.URL()
	hp := u[strings.Index(u, "@")+1:]
	hp = hp[:strings.Index(hp, "/")]
	p := newProxy(t, hp)
	f := startFaults(t, faultOpts{pg: pg, settlerExtra: []string{"FLASH_PG_URL=" + strings.Replace(u, hp, p.Addr(), 1),
		"FLASH_SETTLER_PG_TIMEOUT=2s"}})
	const stock = 400
	cmp := f.campaign(f.bl, 1_000_000, 1, sku{"rp-50", stock, 50})
	var notReady atomic.Bool
	r := runStall(t, f, cmp, func() { p.Set(faultproxy.Blackhole) }, func() {
		// Before restoring: the settler says it is not ready within its bounds.
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			resp, err := http.Get(f.settler + "/readyz")
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == 503 {
					notReady.Store(true)
					break
				}
			}
			time.Sleep(100 * time.Millisecond)
		}
		p.Set(faultproxy.Forward)
	})
	restored := time.Now()
	t.Logf("postgres black-holed for the settler: %s", r.fig)
	if !notReady.Load() {
		t.Error("the settler never reported not ready while its Postgres was black-holed")
	}
	if r.fig.unavailable != 0 {
		t.Errorf("%d claims answered 503 while only the settler's Postgres was away", r.fig.unavailable)
	}
	checkSale(t, f.system, cmp, stock, r.answers)
	t.Logf("settled %s after Postgres was restored", time.Since(restored).Round(time.Millisecond))
}

// TestBrokerTakesProducesButNeverAcks: an in-process broker (kfake) holds every
// produce request without answering for 1.5 s, then stores them. The gateway answers
// 503 within its delivery timeout's bound and gives the claims back; the records that
// land later are voided claims and must not become rows.
func TestBrokerTakesProducesButNeverAcks(t *testing.T) {
	c := testenv.NewKfake(t)
	var holding atomic.Bool
	release := make(chan struct{})
	var once sync.Once
	held := atomic.Int64{}
	c.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		if holding.Load() {
			held.Add(1)
			c.SleepControl(func() { <-release })
		}
		return nil, nil, false // then handled as usual: the records are stored
	})
	f := startFaults(t, faultOpts{brokers: strings.Join(c.ListenAddrs(), ","), pg: startPG(t),
		gatewayExtra: []string{"FLASH_DELIVERY_TIMEOUT=2s"}})
	const stock = 400
	cmp := f.campaign(f.bl, 1_000_000, 1, sku{"rp-50", stock, 50})
	r := runStall(t, f, cmp, func() { holding.Store(true) }, func() {
		holding.Store(false)
		once.Do(func() { close(release) })
	})
	t.Logf("broker holding produces unacknowledged: %s; %d produce requests held", r.fig, held.Load())
	if held.Load() == 0 {
		t.Fatal("no produce request was held: the fault did not bite")
	}
	checkSale(t, f.system, cmp, stock, r.answers)
	checkOneShots(t, f, cmp, r.shots, 8*time.Second)
	if r.fig.slowest > 8*time.Second {
		t.Errorf("a claim waited %s: waits are not bounded by the delivery timeout", r.fig.slowest)
	}
}
