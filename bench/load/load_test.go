package load

import (
	"bytes"
	"context"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/flashgate/flashgate/bench/record"
	"github.com/flashgate/flashgate/bench/traffic"
)

// serve runs handler on a loopback port until the test ends and returns its base URL.
func serve(t *testing.T, handler fasthttp.RequestHandler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &fasthttp.Server{Handler: handler, MaxRequestBodySize: 4096, Logger: quiet{}}
	go srv.Serve(ln)
	t.Cleanup(func() { _ = srv.Shutdown() })
	return "http://" + ln.Addr().String()
}

type quiet struct{}

func (quiet) Printf(string, ...any) {}

func accept(ctx *fasthttp.RequestCtx, claimID string) {
	ctx.SetStatusCode(200)
	ctx.SetContentType("application/json")
	ctx.SetBodyString(`{"result":"accepted","claim_id":"` + claimID + `","campaign_id":"c","sku":"s","user_id":"u","value":50,"expires_at":"2030-01-01T00:00:00.000Z"}`)
}

func baseConfig(target string) Config {
	return Config{
		Target:   target,
		Rate:     1000,
		Duration: 2 * time.Second,
		Timeout:  5 * time.Second,
		Traffic:  traffic.Config{Campaign: "c-test", SKUs: []string{"rp-50", "rp-100"}, Users: 1000, Seed: 7},
	}
}

func runBounded(t *testing.T, cfg Config) *Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if res.Interrupted {
		t.Fatal("run interrupted by the test's time bound")
	}
	return res
}

// A server that stalls once for 200 ms must show up as latency from the intended send
// time - every request scheduled during the stall waits for it - and never as fewer
// samples: the count stays rate × duration.
func TestStallShowsAsLatencyNotFewerSamples(t *testing.T) {
	var stall sync.RWMutex
	var once sync.Once
	start := make(chan struct{})
	var n atomic.Int64
	target := serve(t, func(ctx *fasthttp.RequestCtx) {
		if n.Add(1) == 500 { // half a second in at 1000/s
			once.Do(func() {
				stall.Lock()
				close(start)
				time.Sleep(200 * time.Millisecond)
				stall.Unlock()
			})
		}
		stall.RLock()
		stall.RUnlock()
		accept(ctx, "c-test.x"+strconv.FormatInt(n.Load(), 10))
	})
	cfg := baseConfig(target)
	res := runBounded(t, cfg)
	select {
	case <-start:
	default:
		t.Fatal("the server never stalled")
	}
	if want := int64(2000); res.Intended != want || res.Sent != want || res.Answered != want {
		t.Fatalf("intended %d sent %d answered %d, want %d each", res.Intended, res.Sent, res.Answered, want)
	}
	if res.Errors != 0 {
		t.Fatalf("errors %d, want 0 (%v)", res.Errors, res.Outcomes)
	}
	// About 200 of 2000 requests (10%) were scheduled during the stall, waiting from
	// up to 200 ms down to 0: p99 must sit well inside the stall and max at its length.
	if res.Latency.Max < 190 {
		t.Errorf("max latency %.1fms, want at least 190ms", res.Latency.Max)
	}
	if res.Latency.P99 < 150 {
		t.Errorf("p99 %.1fms, want at least 150ms: the stall was hidden (coordinated omission)", res.Latency.P99)
	}
	// The second holding the stall carries it in its own percentiles.
	if s := res.Seconds[0]; s.Latency.Max < 190 || s.Sent != 1000 {
		t.Errorf("second 0: sent %d max %.1fms, want 1000 and at least 190ms", s.Sent, s.Latency.Max)
	}
	if s := res.Seconds[1]; s.Sent != 1000 {
		t.Errorf("second 1: sent %d, want 1000", s.Sent)
	}
	v := res.Judge(Objective{Bounds: mustSLO(t, "p99=10ms")})
	if v.Held {
		t.Errorf("a p99=10ms objective held across a 200ms stall: %+v", v)
	}
}

func mustSLO(t *testing.T, s string) []Bound {
	t.Helper()
	b, err := ParseSLO(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The opening burst is part of the schedule: 5× the rate for the first second.
func TestBurstSchedule(t *testing.T) {
	for _, tc := range []struct {
		rate  float64
		d     time.Duration
		burst string
		want  int64
	}{
		{1000, 2 * time.Second, "none", 2000},
		{1000, 2 * time.Second, "5x:1s", 6000},
		{1000, 3 * time.Second, "3x:500ms", 4000},
		{10, time.Second, "none", 10},
	} {
		b, err := ParseBurst(tc.burst)
		if err != nil {
			t.Fatal(err)
		}
		if got := Intended(tc.rate, tc.d, b); got != tc.want {
			t.Errorf("Intended(%v, %s, %s) = %d, want %d", tc.rate, tc.d, tc.burst, got, tc.want)
		}
	}
	s := newSchedule(1000, 2*time.Second, Burst{Factor: 5, Length: time.Second})
	if got := s.at(4999); got >= time.Second {
		t.Errorf("last burst request at %s, want before 1s", got)
	}
	if got := s.at(5000); got != time.Second {
		t.Errorf("first request after the burst at %s, want 1s", got)
	}
	if got := s.at(5999); got < 1998*time.Millisecond || got >= 2*time.Second {
		t.Errorf("last request at %s, want 1.999s", got)
	}
}

// An honest server (same request_id → same answer) shows no violation; one that
// hands a retry a new claim_id, or accepts malformed requests, is caught on the wire.
func TestWireChecks(t *testing.T) {
	honest := func() fasthttp.RequestHandler {
		var mu sync.Mutex
		seen := map[string]string{}
		var n int
		return func(ctx *fasthttp.RequestCtx) {
			body := ctx.PostBody()
			i := bytes.Index(body, []byte(`"request_id":"`))
			if !bytes.Equal(ctx.Request.Header.ContentType(), []byte("application/json")) || i < 0 ||
				!bytes.Contains(body, []byte(`"device_id"`)) || len(body) > 300 || bytes.Contains(body, []byte(" ")) ||
				bytes.Contains(body, []byte(`"value"`)) {
				ctx.SetStatusCode(400)
				ctx.SetBodyString(`{"error":"invalid_request","message":"x"}`)
				return
			}
			id := string(body[i+14 : i+14+bytes.IndexByte(body[i+14:], '"')])
			if len(id) > 64 {
				ctx.SetStatusCode(400)
				ctx.SetBodyString(`{"error":"invalid_request","message":"request_id"}`)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if c, ok := seen[id]; ok {
				if c == "" {
					ctx.SetStatusCode(409)
					ctx.SetBodyString(`{"result":"rejected","reason":"user_limit"}`)
					return
				}
				ctx.Response.Header.Set("Idempotent-Replayed", "true")
				accept(ctx, c)
				return
			}
			n++
			if n%3 == 0 {
				seen[id] = ""
				ctx.SetStatusCode(409)
				ctx.SetBodyString(`{"result":"rejected","reason":"user_limit"}`)
				return
			}
			seen[id] = "c-test.h" + strconv.Itoa(n)
			accept(ctx, seen[id])
		}
	}
	var m atomic.Int64
	forgetful := func(ctx *fasthttp.RequestCtx) { accept(ctx, "c-test.f"+strconv.FormatInt(m.Add(1), 10)) }

	cfg := baseConfig(serve(t, honest()))
	cfg.Duration = time.Second
	cfg.Traffic.Mix = traffic.Mix{Retries: 0.2, Invalid: 0.05, Bots: 0.05}
	dir := t.TempDir()
	w, err := record.Create(dir)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Record = w
	res := runBounded(t, cfg)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if res.Violated() {
		t.Fatalf("honest server: violations %v", res.Violations)
	}
	if res.Errors != 0 || res.Refused == 0 || res.Replayed == 0 || res.Rejected == 0 || res.Accepted == 0 {
		t.Fatalf("honest server: errors %d refused %d replayed %d rejected %d accepted %d, want 0 and the rest > 0",
			res.Errors, res.Refused, res.Replayed, res.Rejected, res.Accepted)
	}
	if res.Refused != res.Kinds.Invalid {
		t.Errorf("refused %d, invalid sent %d", res.Refused, res.Kinds.Invalid)
	}
	entries, err := record.Read(dir)
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(entries)) != res.Accepted+res.Replayed {
		t.Errorf("record holds %d entries, want accepted+replayed = %d", len(entries), res.Accepted+res.Replayed)
	}

	cfg = baseConfig(serve(t, forgetful))
	cfg.Duration = time.Second
	cfg.Traffic.Mix = traffic.Mix{Retries: 0.2, Invalid: 0.05}
	res = runBounded(t, cfg)
	if res.ReplayMismatches == 0 || res.InvalidAccepted == 0 || len(res.Violations) == 0 {
		t.Fatalf("forgetful server: replay mismatches %d, invalid accepted %d, want both > 0", res.ReplayMismatches, res.InvalidAccepted)
	}
}

// A server that does not answer in time shows up as timeouts (errors, with their
// latency), and a closed port as connection errors; the run still ends on time.
func TestErrorsAreCounted(t *testing.T) {
	slow := serve(t, func(ctx *fasthttp.RequestCtx) {
		time.Sleep(300 * time.Millisecond)
		accept(ctx, "c-test.s")
	})
	cfg := baseConfig(slow)
	cfg.Rate, cfg.Duration, cfg.Timeout = 100, time.Second, 100*time.Millisecond
	res := runBounded(t, cfg)
	if res.Timeouts != 100 || res.Errors != 100 {
		t.Fatalf("timeouts %d errors %d, want 100 each", res.Timeouts, res.Errors)
	}
	if res.Latency.P50 < 100 {
		t.Errorf("timed-out requests recorded at p50 %.1fms, want at least the 100ms timeout", res.Latency.P50)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cfg = baseConfig("http://" + addr)
	cfg.Rate, cfg.Duration = 100, 500*time.Millisecond
	res = runBounded(t, cfg)
	if res.Errors != 50 || res.ByReason("error")["connection_refused"] != 50 {
		t.Fatalf("closed port: errors %d %v, want 50 connection_refused", res.Errors, res.Outcomes)
	}
	v := res.Judge(Objective{Bounds: mustSLO(t, "p99=10ms"), ErrorBudget: 0.01})
	if v.Held {
		t.Fatal("objective held with every request failing")
	}
}

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want float64
		ok   bool
	}{{"5000", 5000, true}, {"5000/s", 5000, true}, {"5k/s", 5000, true}, {"600/m", 10, true}, {"0", 0, false}, {"-1", 0, false}, {"abc", 0, false}, {"5/h", 0, false}} {
		got, err := ParseRate(tc.in)
		if (err == nil) != tc.ok || (tc.ok && got != tc.want) {
			t.Errorf("ParseRate(%q) = %v, %v; want %v ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
	}
	b, err := ParseSLO("p99=10ms,p999=50ms,max=1s,p50=2ms")
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != 4 || b[0].Quantile != 99 || b[1].Quantile != 99.9 || b[2].Quantile != 100 || b[3].Quantile != 50 || b[1].Limit != 50*time.Millisecond {
		t.Errorf("ParseSLO: %+v", b)
	}
	for _, bad := range []string{"", "p99", "p99=", "p99=-1ms", "q99=1ms", "p0=1ms", "p101=1ms"} {
		if _, err := ParseSLO(bad); err == nil {
			t.Errorf("ParseSLO(%q) accepted", bad)
		}
	}
	for _, bad := range []string{"x", "0.5x", "5x:-1s", "5x:abc"} {
		if _, err := ParseBurst(bad); err == nil {
			t.Errorf("ParseBurst(%q) accepted", bad)
		}
	}
	s, err := ParseStep("x1.5")
	if err != nil || s.next(1000) != 1500 {
		t.Errorf("ParseStep(x1.5) = %+v, %v", s, err)
	}
	s, err = ParseStep("+500")
	if err != nil || s.next(1000) != 1500 {
		t.Errorf("ParseStep(+500) = %+v, %v", s, err)
	}
	if _, err := ParseStep("x0.5"); err == nil {
		t.Error("ParseStep(x0.5) accepted")
	}
}

func TestConfigErrorsNameTheField(t *testing.T) {
	for _, tc := range []struct {
		mut  func(*Config)
		want string
	}{
		{func(c *Config) { c.Target = "localhost:8080" }, "target"},
		{func(c *Config) { c.Target = "http://127.0.0.1:1,ftp://x" }, "ftp://x"},
		{func(c *Config) { c.Target = " , " }, "target"},
		{func(c *Config) { c.Rate = 0 }, "rate"},
		{func(c *Config) { c.Duration = 0 }, "duration"},
		{func(c *Config) { c.Connections = -1 }, "connections"},
		{func(c *Config) { c.Burst = Burst{Factor: 2, Length: time.Hour} }, "burst"},
		{func(c *Config) { c.Traffic.SKUs = nil }, "SKUs"},
	} {
		cfg := baseConfig("http://127.0.0.1:1")
		tc.mut(&cfg)
		_, err := Run(context.Background(), cfg)
		if err == nil || !bytes.Contains([]byte(err.Error()), []byte(tc.want)) {
			t.Errorf("got %v, want an error naming %q", err, tc.want)
		}
	}
}

// A ramp against a server whose latency grows with the rate stops at the objective
// and reports the highest rate that held.
func TestRampFindsTheKnee(t *testing.T) {
	var inflight atomic.Int64
	target := serve(t, func(ctx *fasthttp.RequestCtx) {
		// 400 ms per answer once more than 3 requests are in flight: a server that
		// holds up to a point, then queues. The objective below is loose enough that a
		// busy test machine does not break the first steps by itself.
		if inflight.Add(1) > 3 {
			time.Sleep(400 * time.Millisecond)
		}
		defer inflight.Add(-1)
		accept(ctx, "c-test.r")
	})
	run := baseConfig(target)
	// The race detector slows the generator itself; this test is about the ramp's
	// logic, so it allows the generator more lag than a real run would.
	run.LagBudget = 200 * time.Millisecond
	cfg := RampConfig{Run: run, Start: 50, Step: Step{Factor: 4}, StepDuration: time.Second,
		MaxRate: 20000, Objective: Objective{Bounds: mustSLO(t, "p99=150ms"), ErrorBudget: 0.01}, Refine: 1,
		Pause: 100 * time.Millisecond}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	r, err := Ramp(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Steps) < 2 || r.HighestHeld < 50 || r.LowestBroken == 0 || r.LowestBroken <= r.HighestHeld {
		for _, s := range r.Steps {
			t.Logf("step @%v: held %v %v schedule %+v", s.Rate, s.Held, s.Why, s.Result.Schedule)
		}
		t.Fatalf("ramp: highest held %v lowest broken %v steps %d limit %s", r.HighestHeld, r.LowestBroken, len(r.Steps), r.Limit)
	}
	for _, s := range r.Steps {
		if s.Result.Sent != s.Result.Intended {
			t.Errorf("step @%v sent %d of %d", s.Rate, s.Result.Sent, s.Result.Intended)
		}
	}
}

// A warm-up offers the start rate before the first step and is not judged: a server
// that is slow only while cold (here its first 100 answers) breaks no step, and the
// warm-up's requests are sent, answered and reported apart from the steps'.
func TestRampWarmupIsNotJudged(t *testing.T) {
	var served atomic.Int64
	target := serve(t, func(ctx *fasthttp.RequestCtx) {
		if served.Add(1) <= 100 {
			time.Sleep(300 * time.Millisecond) // cold: far beyond the objective
		}
		accept(ctx, "c-test.w")
	})
	run := baseConfig(target)
	run.LagBudget = 200 * time.Millisecond // the race detector slows the generator itself
	cfg := RampConfig{Run: run, Start: 100, Step: Step{Factor: 2}, StepDuration: time.Second,
		MaxRate: 150, Objective: Objective{Bounds: mustSLO(t, "p99=200ms"), ErrorBudget: 0.01},
		Pause: 100 * time.Millisecond, Warmup: 2 * time.Second}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	r, err := Ramp(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if r.WarmupResult == nil || r.WarmupResult.Sent != 200 || r.WarmupResult.Answered != 200 {
		t.Fatalf("warm-up result %+v; want 200 requests sent and answered (100/s for 2s)", r.WarmupResult)
	}
	if len(r.Steps) != 1 || r.Steps[0].Rate != 100 || r.Steps[0].Result.Sent != 100 {
		t.Fatalf("steps %+v; want one step at the start rate with its own 100 requests (next step is over max)", r.Steps)
	}
	if !r.Steps[0].Held || r.HighestHeld != 100 || r.Limit != "max_rate" {
		t.Errorf("first step held %v %v, highest %v, limit %s; the cold answers were the warm-up's, so it must hold",
			r.Steps[0].Held, r.Steps[0].Why, r.HighestHeld, r.Limit)
	}
	if got := served.Load(); got != 300 {
		t.Errorf("server saw %d requests; want 200 warm-up + 100 step", got)
	}
	bad := cfg
	bad.Warmup = -time.Second
	if _, err := Ramp(ctx, bad); err == nil || !strings.Contains(err.Error(), "warm-up") {
		t.Errorf("negative warm-up: err %v; want one naming the warm-up", err)
	}
}

// Several comma-separated targets share the schedule round-robin: each gets its share
// of requests, the result splits the answers per target, and Observe sees every answer
// with the target it went to.
func TestSeveralTargetsRoundRobin(t *testing.T) {
	var hits [2]atomic.Int64
	var ids atomic.Int64
	handler := func(i int) fasthttp.RequestHandler {
		return func(ctx *fasthttp.RequestCtx) {
			hits[i].Add(1)
			if i == 1 {
				ctx.SetStatusCode(503)
				ctx.SetBodyString(`{"error":"unavailable"}`)
				return
			}
			accept(ctx, "c-test.m"+strconv.FormatInt(ids.Add(1), 10))
		}
	}
	a, b := serve(t, handler(0)), serve(t, handler(1))
	cfg := baseConfig(a + ", " + b)
	cfg.Duration = time.Second
	var seen [2]int64
	var unavailable int64
	cfg.Observe = func(o Observation) {
		seen[o.Target]++
		if o.Status == 503 && o.Reason == "unavailable" && !o.Done.Before(o.Due) {
			unavailable++
		}
	}
	res := runBounded(t, cfg)
	h0, h1 := hits[0].Load(), hits[1].Load()
	if h0+h1 != res.Intended || h0-h1 > 1 || h1-h0 > 1 {
		t.Fatalf("hits %d and %d, want %d split evenly", h0, h1, res.Intended)
	}
	if len(res.PerTarget) != 2 || res.PerTarget[0].Target != a || res.PerTarget[1].Target != b {
		t.Fatalf("per target %+v, want one entry per target in order", res.PerTarget)
	}
	if p := res.PerTarget[0]; p.Answered != h0 || p.Accepted != h0 || p.Errors != 0 {
		t.Errorf("target 0: %+v, want %d answered and accepted", p, h0)
	}
	if p := res.PerTarget[1]; p.Answered != h1 || p.Accepted != 0 || p.Errors != h1 {
		t.Errorf("target 1: %+v, want %d answered, all errors (503)", p, h1)
	}
	if seen[0] != h0 || seen[1] != h1 || unavailable != h1 {
		t.Errorf("observed %v (503s %d), want %d and %d", seen, unavailable, h0, h1)
	}
}

// Every 503 bench hears is in its record (request_id, no claim_id), so bench verify can
// check that a request_id answered only 503 never became a row; 200s are recorded as
// before, and a 503 for a malformed request is not recorded (it names no claim).
func TestRecordHolds503s(t *testing.T) {
	var n, sent503 atomic.Int64
	srv := serve(t, func(ctx *fasthttp.RequestCtx) {
		i := n.Add(1)
		if i%2 == 0 {
			sent503.Add(1)
			ctx.SetStatusCode(503)
			ctx.SetBodyString(`{"error":"unavailable"}`)
			return
		}
		accept(ctx, "c-test.u"+strconv.FormatInt(i, 10))
	})
	cfg := baseConfig(srv)
	cfg.Duration = time.Second
	dir := t.TempDir()
	w, err := record.Create(dir)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Record = w
	res := runBounded(t, cfg)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	entries, err := record.Read(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got503, got200 int64
	for _, e := range entries {
		if e.Is503() {
			got503++
			if e.RequestID == "" || e.ClaimID != "" || e.User == "" {
				t.Fatalf("503 entry %+v", e)
			}
		} else {
			got200++
		}
	}
	if sent503.Load() == 0 || got503 != sent503.Load() || got200 != res.Accepted+res.Replayed {
		t.Fatalf("record: %d 503s (server sent %d), %d 200s (accepted+replayed %d)", got503, sent503.Load(), got200, res.Accepted+res.Replayed)
	}
}

// A lottery's 200s: "won" is an accepted claim (and counted in Won), "no_prize" is a
// draw of its own (NoPrize, its own outcome class), not an accepted claim and not a
// claim_id missing; the record keeps a no-prize draw's draw_id as a draw, and a retry
// whose draw changes its result is a replay mismatch.
func TestLotteryAnswers(t *testing.T) {
	lottery := func(flip bool) fasthttp.RequestHandler {
		var mu sync.Mutex
		seen := map[string]bool{} // request_id -> won
		var n int
		return func(ctx *fasthttp.RequestCtx) {
			body := ctx.PostBody()
			i := bytes.Index(body, []byte(`"request_id":"`))
			if i < 0 {
				ctx.SetStatusCode(400)
				ctx.SetBodyString(`{"error":"invalid_request","message":"request_id"}`)
				return
			}
			id := string(body[i+14 : i+14+bytes.IndexByte(body[i+14:], '"')])
			mu.Lock()
			defer mu.Unlock()
			won, again := seen[id]
			if !again {
				n++
				won = n%4 == 0
				seen[id] = won
			} else {
				ctx.Response.Header.Set("Idempotent-Replayed", "true")
				if flip {
					won = !won
				}
			}
			ctx.SetStatusCode(200)
			ctx.SetContentType("application/json")
			if won {
				ctx.SetBodyString(`{"result":"won","claim_id":"c-test.d` + id + `","campaign_id":"c-test","sku":"iphone","user_id":"u","value":1000,"expires_at":"2030-01-01T00:00:00.000Z"}`)
			} else {
				ctx.SetBodyString(`{"result":"no_prize","draw_id":"c-test.d` + id + `","campaign_id":"c-test","user_id":"u"}`)
			}
		}
	}
	cfg := baseConfig(serve(t, lottery(false)))
	cfg.Duration = time.Second
	cfg.Traffic.Mix = traffic.Mix{Retries: 0.2}
	dir := t.TempDir()
	w, err := record.Create(dir)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Record = w
	res := runBounded(t, cfg)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if res.Violated() {
		t.Fatalf("honest lottery: violations %v", res.Violations)
	}
	if res.NoPrize == 0 || res.Won == 0 || res.Won != res.Accepted || res.Replayed == 0 || res.Errors != 0 {
		t.Fatalf("honest lottery: won %d accepted %d no prize %d replayed %d errors %d", res.Won, res.Accepted, res.NoPrize, res.Replayed, res.Errors)
	}
	// Every first answer is a draw: about 3 in 4 of them no prize.
	if draws := res.Won + res.NoPrize; draws+res.Replayed != res.Answered || res.NoPrize < 2*res.Won || res.DrawsPerSec <= 0 {
		t.Errorf("draws %d (won %d, no prize %d) + replayed %d != answered %d, or draws/s %.0f",
			draws, res.Won, res.NoPrize, res.Replayed, res.Answered, res.DrawsPerSec)
	}
	if got := res.ByReason("no_prize")["no_prize"]; got != res.NoPrize {
		t.Errorf("outcome no_prize/no_prize counts %d, want %d", got, res.NoPrize)
	}
	if got := res.ByReason("accepted")["won"]; got != res.Won {
		t.Errorf("outcome accepted/won counts %d, want %d", got, res.Won)
	}
	entries, err := record.Read(dir)
	if err != nil {
		t.Fatal(err)
	}
	var none, won int64
	for _, e := range entries {
		switch {
		case e.IsNoPrize():
			if e.DrawID == "" || e.ClaimID != "" || e.SKU != "" || e.Value != 0 {
				t.Fatalf("no-prize entry %+v", e)
			}
			if !e.Replayed {
				none++
			}
		case e.Result == record.ResultWon:
			if e.ClaimID == "" || e.Draw() != e.ClaimID || e.Value != 1000 || e.SKU != "iphone" {
				t.Fatalf("won entry %+v", e)
			}
			if !e.Replayed {
				won++
			}
		default:
			t.Fatalf("a lottery answer recorded as %+v", e)
		}
	}
	if none != res.NoPrize || won != res.Won || int64(len(entries)) != res.Answered {
		t.Errorf("record: %d no-prize, %d won first answers, %d entries; run counted %d, %d, %d answered",
			none, won, len(entries), res.NoPrize, res.Won, res.Answered)
	}

	cfg = baseConfig(serve(t, lottery(true)))
	cfg.Duration = time.Second
	cfg.Traffic.Mix = traffic.Mix{Retries: 0.2}
	res = runBounded(t, cfg)
	if res.ReplayMismatches == 0 || !strings.Contains(strings.Join(res.Violations, "\n"), "(no_prize)") {
		t.Fatalf("a lottery whose retries re-roll: replay mismatches %d, violations %v", res.ReplayMismatches, res.Violations)
	}
}
