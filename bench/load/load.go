package load

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/flashgate/flashgate/bench/traffic"
)

// job is one scheduled request on its way to a connection.
type job struct {
	req      *traffic.Request
	target   int           // index into the run's targets
	at       time.Duration // intended send time, from the run's start
	lag      time.Duration // how late the scheduler handed it over
	dispatch time.Duration
}

// answer is what came back for one job.
type answer struct {
	job
	pickup   time.Duration // when a connection took it
	done     time.Duration // when the answer (or error) arrived
	status   int           // 0 on a transport error
	reason   string        // rejection reason, error name, or transport error kind
	claimID  string        // a no-prize draw's draw_id
	value    int64
	replayed bool
	// draw is a lottery's 200: drawWon ("result":"won", a claim_id) or drawNone
	// ("result":"no_prize", a draw_id and nothing taken); 0 for any other answer.
	draw drawResult
	// sku is the prize a won draw answered (the request's sku is ignored by a lottery).
	sku string
}

type drawResult uint8

const (
	drawWon drawResult = iota + 1
	drawNone
)

// String is how a violation names a draw's result ("" for a claim).
func (d drawResult) String() string {
	switch d {
	case drawWon:
		return " (won)"
	case drawNone:
		return " (no_prize)"
	}
	return ""
}

var (
	hdrReplayed  = []byte("Idempotent-Replayed")
	keyClaimID   = []byte(`"claim_id":"`)
	keyDrawID    = []byte(`"draw_id":"`)
	keySKU       = []byte(`"sku":"`)
	bodyWon      = []byte(`{"result":"won",`)
	bodyNoPrize  = []byte(`{"result":"no_prize",`)
	keyReason    = []byte(`"reason":"`)
	keyError     = []byte(`"error":"`)
	keyValue     = []byte(`"value":`)
	valTrue      = []byte("true")
	userAgent    = []byte("flashgate-bench")
	hdrForwarded = "X-Forwarded-For"
)

// Run sends cfg's schedule and returns what it measured. It returns an error only for
// bad configuration; a server that fails shows up in the result. Cancelling ctx ends
// the schedule early (the result says so) and waits for requests in flight.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	model, err := traffic.New(cfg.Traffic)
	if err != nil {
		return nil, err
	}
	var dests []dest
	for _, t := range cfg.Targets() {
		u, _ := url.Parse(t)
		addr := u.Host
		if u.Port() == "" {
			if u.Scheme == "https" {
				addr += ":443"
			} else {
				addr += ":80"
			}
		}
		hc := &fasthttp.HostClient{
			Addr:                addr,
			IsTLS:               u.Scheme == "https",
			MaxConns:            cfg.Connections,
			MaxConnWaitTimeout:  cfg.Timeout,
			ReadTimeout:         cfg.Timeout,
			WriteTimeout:        cfg.Timeout,
			MaxIdleConnDuration: 30 * time.Second,
			// A claim is not idempotent at the HTTP layer: the client must not resend it on
			// its own; bench's retries are the traffic model's, with their request_id.
			MaxIdemponentCallAttempts: 1,
			NoDefaultUserAgentHeader:  true,
		}
		defer hc.CloseIdleConnections()
		dests = append(dests, dest{hc: hc, uri: u.Scheme + "://" + u.Host + cfg.Path})
	}

	sch := newSchedule(cfg.Rate, cfg.Duration, cfg.Burst)
	tcfg := model.Config()
	rec := newRecorder(&cfg, tcfg, sch, len(dests))
	jobs := make(chan job, 1<<16)
	answers := make(chan *answer, 1<<15)

	// Every worker is running before the clock starts, so starting hundreds of
	// goroutines does not make the first requests late.
	var wg, ready sync.WaitGroup
	wg.Add(cfg.Connections)
	ready.Add(cfg.Connections)
	startc := make(chan time.Time)
	toks := newTokens(cfg.UserTokenSecret)
	for range cfg.Connections {
		go func() {
			defer wg.Done()
			ready.Done()
			worker(dests, toks, cfg.Timeout, <-startc, jobs, answers)
		}()
	}
	ready.Wait()
	base := time.Now()
	for range cfg.Connections {
		startc <- base
	}
	rec.base = base
	rec.res.Started = base.UTC()
	recDone := make(chan struct{})
	go func() { rec.run(answers); close(recDone) }()

	var queueFull int64
	interrupted := false
	var timer *time.Timer
	for i := int64(0); i < sch.n; i++ {
		// The request is built before waiting for its time, so building it never
		// makes it late.
		r := model.Next()
		at := sch.at(i)
		sleepUntil(ctx, base, at, &timer)
		if ctx.Err() != nil {
			interrupted = true
			break
		}
		now := time.Since(base)
		j := job{req: r, target: int(i % int64(len(dests))), at: at, lag: max(now-at, 0), dispatch: now}
		select {
		case jobs <- j:
		default:
			// Every connection is busy and the queue in front of them is full: the
			// server is far slower than the rate. Waiting here makes the generator
			// late, which the run reports, rather than dropping the request.
			queueFull++
			jobs <- j
		}
		rec.sent.Add(1)
	}
	close(jobs)
	wg.Wait()
	close(answers)
	<-recDone
	return rec.finish(interrupted, queueFull, time.Since(base)), nil
}

// sleepUntil waits until offset at from base. Go's timers wake up to a millisecond late
// when the process is idle (the runtime's poller sleeps in whole milliseconds), which
// would show up as schedule lag and inflate every latency; nanosleep(2) wakes within
// tens of microseconds. Long waits use a timer so cancellation is prompt, then
// nanosleep for the last stretch.
func sleepUntil(ctx context.Context, base time.Time, at time.Duration, timer **time.Timer) {
	for {
		wait := at - time.Since(base)
		if wait <= 0 || ctx.Err() != nil {
			return
		}
		if wait > 20*time.Millisecond {
			d := wait - 10*time.Millisecond
			if *timer == nil {
				*timer = time.NewTimer(d)
			} else {
				(*timer).Reset(d)
			}
			select {
			case <-(*timer).C:
			case <-ctx.Done():
				return
			}
			continue
		}
		// nanosleep returns early (EINTR) when a signal arrives, and the Go runtime
		// signals its threads often (preemption, and more under -race): loop until the
		// time has really come, or a request would leave before it was due and its
		// latency would be understated.
		ts := syscall.NsecToTimespec(int64(wait))
		_ = syscall.Nanosleep(&ts, nil)
	}
}

// dest is one target: its connection pool and claim URI.
type dest struct {
	hc  *fasthttp.HostClient
	uri string
}

func worker(dests []dest, toks *tokens, timeout time.Duration, base time.Time, jobs <-chan job, out chan<- *answer) {
	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	for j := range jobs {
		a := &answer{job: j, pickup: time.Since(base)}
		r := j.req
		d := dests[j.target]
		req.Reset()
		resp.Reset()
		req.SetRequestURI(d.uri)
		req.Header.SetMethod(fasthttp.MethodPost)
		req.Header.SetContentType(r.ContentType)
		req.Header.SetUserAgentBytes(userAgent)
		// The gateway believes X-Forwarded-For only from FLASH_TRUSTED_PROXIES; without
		// that every request's IP is bench's own loopback address.
		req.Header.Set(hdrForwarded, r.IP)
		if toks != nil {
			req.Header.Set("Authorization", toks.header(r.User))
		}
		req.SetBodyRaw(r.Body)
		err := d.hc.DoTimeout(req, resp, timeout)
		a.done = time.Since(base)
		if err != nil {
			a.reason = transportError(err)
		} else {
			a.status = resp.StatusCode()
			parseAnswer(a, resp)
		}
		out <- a
	}
}

func transportError(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, fasthttp.ErrTimeout), errors.Is(err, fasthttp.ErrDialTimeout),
		errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.Is(err, fasthttp.ErrNoFreeConns):
		return "no_free_connection"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection_refused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, fasthttp.ErrConnectionClosed):
		return "connection_closed"
	}
	return "transport_error"
}

// parseAnswer reads the few fields bench needs from a gateway answer without a JSON
// decoder: the shapes are fixed by the contract and the generator must stay cheap.
func parseAnswer(a *answer, resp *fasthttp.Response) {
	body := resp.Body()
	switch {
	case a.status == fasthttp.StatusOK && bytes.HasPrefix(body, bodyNoPrize):
		// A lottery draw that won nothing (CONTRACT.md "Redemption kinds"): a draw, not
		// a claim; its draw_id is what a retry must get again.
		a.draw = drawNone
		a.claimID = field(body, keyDrawID)
		a.replayed = bytes.Equal(resp.Header.PeekBytes(hdrReplayed), valTrue)
	case a.status == fasthttp.StatusOK:
		if bytes.HasPrefix(body, bodyWon) {
			a.draw = drawWon
			a.sku = field(body, keySKU)
		}
		a.claimID = field(body, keyClaimID)
		if i := bytes.Index(body, keyValue); i >= 0 {
			rest := body[i+len(keyValue):]
			n := 0
			for n < len(rest) && rest[n] >= '0' && rest[n] <= '9' {
				n++
			}
			a.value, _ = strconv.ParseInt(string(rest[:n]), 10, 64)
		}
		a.replayed = bytes.Equal(resp.Header.PeekBytes(hdrReplayed), valTrue)
	default:
		if s := field(body, keyReason); s != "" {
			a.reason = s
		} else {
			a.reason = field(body, keyError)
		}
	}
}

func field(body, key []byte) string {
	i := bytes.Index(body, key)
	if i < 0 {
		return ""
	}
	rest := body[i+len(key):]
	j := bytes.IndexByte(rest, '"')
	if j < 0 || j > 128 {
		return ""
	}
	return intern(rest[:j])
}

// intern returns the contract's reason and error names without allocating; anything
// else (a claim id) is copied, since the response buffer is reused.
func intern(b []byte) string {
	switch string(b) {
	case "sold_out":
		return "sold_out"
	case "budget_exhausted":
		return "budget_exhausted"
	case "user_limit":
		return "user_limit"
	case "not_started":
		return "not_started"
	case "ended":
		return "ended"
	case "paused":
		return "paused"
	case "not_eligible":
		return "not_eligible"
	case "partner_quota":
		return "partner_quota"
	case "device_velocity":
		return "device_velocity"
	case "ip_velocity":
		return "ip_velocity"
	case "user_velocity":
		return "user_velocity"
	case "blocked":
		return "blocked"
	case "invalid_request":
		return "invalid_request"
	case "unavailable":
		return "unavailable"
	case "unknown_campaign":
		return "unknown_campaign"
	case "unknown_sku":
		return "unknown_sku"
	case "idempotency_key_reuse":
		return "idempotency_key_reuse"
	}
	return string(b)
}

// counter is read by the progress line while the scheduler adds to it.
type counter = atomic.Int64
