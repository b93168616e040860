// Package claimer owns the path of one claim from the gateway to durability. It
// coalesces concurrent claims into batched calls of claim.lua (one Redis round trip and
// one script entry per batch), produces each accepted claim to flash.claims and returns
// only when the broker acknowledged it, and gives back what a claim took (void.lua) when
// that produce fails. It knows nothing of HTTP: gateway/api maps its result codes.
package claimer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flashgate/flashgate/internal/claim"
	"github.com/flashgate/flashgate/internal/risk"
	"github.com/flashgate/flashgate/internal/rkeys"
)

// Errors returned by Do. Both mean "nothing was taken (or it was given back); retry with
// the same request_id" and map to 503.
var (
	// ErrUnavailable: Redis or the broker could not be reached, or the claim could not be
	// made durable and was compensated.
	ErrUnavailable = errors.New("claimer: unavailable")
	// ErrOverloaded: the queue in front of Redis is full, or a claim waited in it longer
	// than RedisTimeout (Redis stalled); shedding load is better than
	// letting every waiting client time out.
	ErrOverloaded = errors.New("claimer: overloaded")
	// ErrClosed: the claimer is shutting down.
	ErrClosed = errors.New("claimer: closed")

	errAckTimeout = errors.New("no acknowledgement from the broker within AckTimeout")
	errMarkFailed = errors.New("acknowledged by the broker, but the durable mark (A -> D) could not be written")
)

// Config tunes the claimer. Zero values are replaced by defaults in New; invalid values
// are errors naming the field.
type Config struct {
	// MaxBatch is the most claims one script call decides.
	MaxBatch int
	// BatchWait is how long the first claim of a batch waits for others to join it.
	// Under light load a claim waits no longer than this; 0 means "take what is queued".
	BatchWait time.Duration
	// Workers is how many script calls may be in flight at once.
	Workers int
	// QueueSize bounds the claims waiting for a worker; beyond it Do sheds load.
	QueueSize int
	// RedisTimeout bounds one script call.
	RedisTimeout time.Duration
	// AcceptGrace is how long an accepted request's idempotency record outlives the
	// campaign's end, so late retries still get their claim back.
	AcceptGrace time.Duration
	// RejectTTL is how long a rejection is remembered for retries.
	RejectTTL time.Duration
	// RouteTTL is how long a campaign's routing entry is cached.
	RouteTTL time.Duration
	// AckTimeout bounds how long a claim waits for the broker's acknowledgement before
	// it is voided and answered 503. It should be a little above the producer's
	// delivery timeout: franz-go enforces that timeout only where it is safe for the
	// idempotent producer, and a broker that died with the connection open can hold a
	// record far longer. Giving up here is safe because void.lua and the settler's
	// confirm.lua race atomically on the record (see DESIGN.md).
	AckTimeout time.Duration
	// Decisions, when set, receives every claim decision the script makes (accepted,
	// rejected or refused), for the flash.decisions log. Nil: decisions are not logged.
	Decisions DecisionRecorder
	// DisableShortCircuit sends every claim to claim.lua (a benchmark baseline: the
	// short-circuit is on by default, see shortcircuit.go).
	DisableShortCircuit bool
	// ClockMargin is how far outside the campaign's window the Redis clock must clearly
	// be (after the uncertainty of its estimate) before not_started or ended is answered
	// without claim.lua.
	ClockMargin time.Duration
	// MarkLinger is how long the first durable mark waits for others to share its
	// durable.lua call (default 2ms, at most 1s). A mark only lets a retry of an
	// accepted claim be answered 200 at once instead of 503 in_flight; the client
	// already has its 200, so the wait costs no claim any latency, and at moderate rates
	// it turns one Redis round trip per accepted claim into one per few.
	MarkLinger time.Duration
	// InFlightWait bounds how long a retry of a request_id whose first attempt is still
	// in flight (record A: not yet durable, not voided) waits for that attempt's outcome
	// before it is answered 503 in_flight (default AckTimeout + RedisTimeout: the longest
	// a live gateway takes to mark or void it). Negative: answer at once.
	InFlightWait time.Duration
	// OnNotWarm, when set, is called (on the claim path: it must not block) when
	// claim.lua answers NOT_WARM for a campaign: its counters are fenced, or this Redis
	// is not the server they were rebuilt on (restarted, restored from an older copy,
	// failed over). The gateway uses it to run recovery now instead of at its next pass.
	OnNotWarm func(campaign string)
	// RejectFlush is how often the rejection counts of short-circuited claims are added
	// to the campaign's figures in Redis.
	RejectFlush time.Duration
	// ProduceMode is ProduceAsync (the default: each accepted claim's client waits on
	// its own produce promise while the worker takes its next batch) or ProduceSync, a
	// benchmark baseline only: the worker produces the batch's accepted claims and waits
	// for their acknowledgements before it takes its next batch.
	ProduceMode string
	// BeforeProduce, when set, is called after the script accepted a claim and before
	// its record is produced. Test-only: the gateway sets it (FLASH_FAULT_EXIT_AFTER_SCRIPT)
	// to die in that window, which only the outbox relay can recover. Nil in production.
	BeforeProduce func()
	// Points holds the price of a points_item claim in the user's slot around its
	// decision (points.go; internal/points.Service). Nil: such claims are 503.
	Points PointsHolder
}

// Produce modes (Config.ProduceMode).
const (
	ProduceAsync = "async"
	ProduceSync  = "sync"
)

// DecisionRecorder records claim decisions. Record is called on the claim path once per
// decision, synchronously: it must copy what it keeps and must never block (the
// decision log's producer, internal/risk/decisionlog, drops and counts instead).
type DecisionRecorder interface {
	Record(d *risk.Decision)
}

func (c *Config) validate() error {
	def := func(p *int, v int) {
		if *p == 0 {
			*p = v
		}
	}
	defd := func(p *time.Duration, v time.Duration) {
		if *p == 0 {
			*p = v
		}
	}
	def(&c.MaxBatch, 64)
	def(&c.Workers, 4)
	def(&c.QueueSize, 16384)
	defd(&c.RedisTimeout, time.Second)
	defd(&c.AcceptGrace, 24*time.Hour)
	defd(&c.RejectTTL, time.Hour)
	defd(&c.RouteTTL, time.Second)
	defd(&c.AckTimeout, 6*time.Second)
	defd(&c.ClockMargin, 100*time.Millisecond)
	defd(&c.RejectFlush, 100*time.Millisecond)
	defd(&c.MarkLinger, 2*time.Millisecond)
	if c.InFlightWait == 0 {
		c.InFlightWait = c.AckTimeout + c.RedisTimeout
	}
	if c.ProduceMode == "" {
		c.ProduceMode = ProduceAsync
	}
	switch {
	case c.MaxBatch < 1 || c.MaxBatch > 512:
		return fmt.Errorf("claimer config: MaxBatch=%d, want 1..512", c.MaxBatch)
	case c.MarkLinger < 0 || c.MarkLinger > time.Second:
		return fmt.Errorf("claimer config: MarkLinger=%s, want at most 1s (0: the default, 2ms)", c.MarkLinger)
	case c.BatchWait < 0 || c.BatchWait > 50*time.Millisecond:
		return fmt.Errorf("claimer config: BatchWait=%s, want 0..50ms", c.BatchWait)
	case c.Workers < 1 || c.Workers > 256:
		return fmt.Errorf("claimer config: Workers=%d, want 1..256", c.Workers)
	case c.QueueSize < c.MaxBatch:
		return fmt.Errorf("claimer config: QueueSize=%d must be at least MaxBatch=%d", c.QueueSize, c.MaxBatch)
	case c.RedisTimeout < time.Millisecond:
		return fmt.Errorf("claimer config: RedisTimeout=%s, want at least 1ms", c.RedisTimeout)
	case c.RejectTTL < time.Second:
		return fmt.Errorf("claimer config: RejectTTL=%s, want at least 1s", c.RejectTTL)
	case c.AckTimeout < 10*time.Millisecond || c.AckTimeout > 5*time.Minute:
		return fmt.Errorf("claimer config: AckTimeout=%s, want 10ms..5m", c.AckTimeout)
	case c.RouteTTL < 10*time.Millisecond || c.RouteTTL > time.Minute:
		// The route carries the short-circuit's conclusions: its TTL is their safety
		// bound if a change message is lost.
		return fmt.Errorf("claimer config: RouteTTL=%s, want 10ms..1m", c.RouteTTL)
	case c.ClockMargin < 0 || c.ClockMargin > time.Minute:
		return fmt.Errorf("claimer config: ClockMargin=%s, want 0..1m", c.ClockMargin)
	case c.RejectFlush < time.Millisecond || c.RejectFlush > time.Minute:
		return fmt.Errorf("claimer config: RejectFlush=%s, want 1ms..1m", c.RejectFlush)
	case c.InFlightWait > 10*time.Minute:
		return fmt.Errorf("claimer config: InFlightWait=%s, want at most 10m", c.InFlightWait)
	case c.ProduceMode != ProduceAsync && c.ProduceMode != ProduceSync:
		return fmt.Errorf("claimer config: ProduceMode=%q, want %q or %q", c.ProduceMode, ProduceAsync, ProduceSync)
	}
	return nil
}

// Request is one claim. The caller fills the inputs, calls Do, and reads Outcome.
// Inputs must stay valid until Do returns.
type Request struct {
	RequestID, CampaignID, SKU, UserID, DeviceID, IP string
	// Channel is where the claim came from: "" for the app, "partner:<id>" (it takes
	// from that partner's quota in the campaign) or "push:<id>" (DESIGN.md "Partners").
	Channel string
	Outcome

	// A lottery draw's inputs, set by Do for a lottery campaign (lottery.go): Do
	// replaces SKU (the client's is ignored) with the prize the draw points at, and
	// after the decision with the prize won ("" for no prize). DrawR is the random
	// number, DrawVersion the odds version, DrawPick the prize r points at before stock.
	DrawR       int64
	DrawVersion string
	DrawPick    string
	drawArg     string
}

// Outcome is the script's decision for a request.
type Outcome struct {
	Code         int // one of scripts.Code*
	Replayed     bool
	ClaimID      string
	Value        int64
	ClaimedAtMs  int64
	ExpiresAtMs  int64
	RetryAfterMs int64
	// DecidedAtMs is the Redis time of the decision.
	DecidedAtMs int64
	// Risk is what the risk checks saw (docs/RISK.md).
	Risk risk.Seen
	// Lottery: the claim was a draw (Code CodeAccepted: won, SKU is the prize;
	// CodeNoPrize: won nothing, ClaimID is the draw_id).
	Lottery bool
}

// Claimer decides and makes durable claims. Safe for concurrent use.
type Claimer struct {
	cfg     Config
	rdb     *redis.Client
	kcl     *kgo.Client
	log     *slog.Logger
	routes  *routes
	metrics *Metrics

	in     chan *pending
	marks  chan mark
	wg     sync.WaitGroup
	closed atomic.Bool
	quit   chan struct{}

	// The short-circuit (shortcircuit.go).
	clock        atomic.Pointer[clockSample]
	subscribed   atomic.Bool
	rej          rejCounts
	workersDone  sync.WaitGroup
	scriptClaims atomic.Int64
	shortClaims  atomic.Int64
	changes      atomic.Int64
}

// New starts a claimer's workers and its background loops. Close stops them.
func New(cfg Config, rdb *redis.Client, kcl *kgo.Client, m *Metrics, log *slog.Logger) (*Claimer, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if rdb == nil || kcl == nil {
		return nil, errors.New("claimer: a Redis client and a Kafka client are required")
	}
	if m == nil {
		m = NewMetrics(nil)
	}
	c := &Claimer{
		cfg:     cfg,
		rdb:     rdb,
		kcl:     kcl,
		log:     log,
		routes:  newRoutes(rdb, cfg.RouteTTL, 250*time.Millisecond),
		metrics: m,
		in:      make(chan *pending, cfg.QueueSize),
		marks:   make(chan mark, 8192),
		quit:    make(chan struct{}),
		rej:     rejCounts{m: make(map[rejCount]int64)},
	}
	c.wg.Add(3 + cfg.Workers)
	c.workersDone.Add(cfg.Workers)
	go c.markLoop()
	go c.listen()
	go c.flushLoop()
	for range cfg.Workers {
		go c.work()
	}
	return c, nil
}

// Close stops the claimer and waits for every batch in flight. Callers must stop
// calling Do first (the HTTP server drains its handlers), then Close, then flush the
// producer: a Do that starts after Close returns ErrClosed.
func (c *Claimer) Close() {
	if c.closed.Swap(true) {
		return
	}
	close(c.quit)
	c.wg.Wait()
}

// CampaignOfClaim returns the campaign part of a claim id, or "" if it has none.
func CampaignOfClaim(claimID string) string {
	for i := len(claimID) - 1; i >= 0; i-- {
		if claimID[i] == '.' {
			if len(claimID)-i-1 != 26 {
				return ""
			}
			return claimID[:i]
		}
	}
	return ""
}

// Do decides one claim and, when it is accepted, returns only once it is durable in
// Kafka. A nil error means Outcome is the answer; ErrUnavailable or ErrOverloaded mean
// 503 with nothing taken.
func (c *Claimer) Do(ctx context.Context, r *Request) error {
	if c.closed.Load() {
		return ErrClosed
	}
	now := time.Now()
	rt, err := c.routes.get(ctx, r.CampaignID, now)
	if err != nil {
		c.metrics.redisErrors.Inc()
		return fmt.Errorf("%w: route campaign: %v", ErrUnavailable, err)
	}
	if rt == nil {
		r.Outcome = Outcome{Code: claim.CodeUnknownCampaign}
		return nil
	}
	if rt.points != nil {
		return c.doPoints(ctx, rt, r) // points.go: hold the price around decide
	}
	return c.decide(ctx, rt, r)
}

// decide runs one claim through claim.lua and, when accepted, makes it durable.
func (c *Claimer) decide(ctx context.Context, rt *route, r *Request) error {
	var err error
	p := pendingPool.Get().(*pending)
	defer func() {
		p.req, p.rt, p.err = nil, nil, nil
		pendingPool.Put(p)
	}()
	restaled := false
	var inFlightUntil time.Time
	backoff := 5 * time.Millisecond
	for {
		p.req, p.rt, p.err, p.durable = r, rt, nil, false
		p.claimID = NewClaimID(r.CampaignID)
		if rt.lottery != nil {
			// A fresh random number for every decision the script may make; a retry
			// of a decided request_id is replayed from its record instead.
			if err := rt.lottery.draw(r); err != nil {
				return fmt.Errorf("%w: draw: %v", ErrUnavailable, err)
			}
		} else {
			r.drawArg = ""
		}
		p.reqKey = rkeys.Request(r.CampaignID, r.RequestID)
		p.queued = time.Now()
		select {
		case c.in <- p:
		default:
			c.metrics.shed.Inc()
			return ErrOverloaded
		}
		<-p.done
		if p.err != nil {
			return p.err
		}
		if r.Code == claim.CodeStale && !restaled {
			restaled = true
			c.routes.invalidate(r.CampaignID)
			if rt, err = c.routes.get(ctx, r.CampaignID, time.Now()); err != nil {
				return fmt.Errorf("%w: route campaign: %v", ErrUnavailable, err)
			}
			if rt == nil {
				r.Outcome = Outcome{Code: claim.CodeUnknownCampaign}
				return nil
			}
			continue
		}
		if r.Code == claim.CodeInFlight && c.waitInFlight(ctx, &inFlightUntil, &backoff) {
			// Double tap: the first attempt of this request_id is still being made
			// durable (here or on another gateway). Its answer is this one's: asked
			// again once it is D (200, its claim) or V (decided anew).
			c.metrics.inFlightWaits.Inc()
			continue
		}
		break
	}
	if r.Code == claim.CodeNotWarm && c.cfg.OnNotWarm != nil {
		c.cfg.OnNotWarm(r.CampaignID)
	}
	switch r.Code {
	case claim.CodeStale, claim.CodeNotWarm, claim.CodeInFlight:
		return fmt.Errorf("%w: script code %d", ErrUnavailable, r.Code)
	}
	if r.Code != claim.CodeAccepted && r.Code != claim.CodeNoPrize || r.Replayed {
		return nil
	}
	return c.durability(p)
}

// waitInFlight sleeps before the next ask of a request_id whose first attempt is in
// flight, doubling *backoff up to 100ms, and reports false (answer 503 in_flight now)
// once InFlightWait has passed since the first in_flight answer, or ctx ended.
func (c *Claimer) waitInFlight(ctx context.Context, until *time.Time, backoff *time.Duration) bool {
	now := time.Now()
	if until.IsZero() {
		*until = now.Add(c.cfg.InFlightWait)
	}
	d := *backoff
	if !now.Add(d).Before(*until) || c.closed.Load() {
		return false
	}
	*backoff = min(2*d, 100*time.Millisecond)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
