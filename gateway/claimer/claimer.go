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
	"unsafe"

	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flashgate/flashgate/internal/claim"
	"github.com/flashgate/flashgate/internal/kafkaopt"
	"github.com/flashgate/flashgate/internal/risk"
	"github.com/flashgate/flashgate/internal/rkeys"
	"github.com/flashgate/flashgate/scripts"
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
}

type pending struct {
	req     *Request
	rt      *route
	claimID string
	reqKey  string
	outbox  string
	err     error
	done    chan struct{}
	ack     chan error
	// marked receives markLoop's answer for this claim's durable mark: true only if
	// durable.lua reported it D (the one condition for a 200).
	marked chan bool
	// queued is when Do put the claim in the queue: a claim that waited there longer
	// than RedisTimeout is answered 503 unrun (see run).
	queued time.Time
	// short is the code the short-circuit would answer (0: claim.lua decides).
	short int
	// durable: the worker already made this accepted claim durable (ProduceSync), with
	// err its result.
	durable bool
}

// voidRetryFor is how many RedisTimeouts a failed void is retried for before its
// client hears 503 (and the void goes on in the background).
const voidRetryFor = 3

var pendingPool = sync.Pool{New: func() any {
	return &pending{done: make(chan struct{}, 1), ack: make(chan error, 1), marked: make(chan bool, 1)}
}}

type batch struct {
	items []*pending
	keys  []string
	args  []any
	// keybuf holds the per-claim risk key names of one script call; keys views into it.
	// It is overwritten by the next call, after the previous one returned.
	keybuf []byte
	// The short-circuit's scratch: claims for the script, candidates, their commands
	// and their rejection records (valbuf, viewed like keybuf).
	rest, cand []*pending
	// fresh is the batch less the claims that waited too long (dropStale).
	fresh  []*pending
	cmds   []*redis.Cmd
	valbuf []byte
	// The codec's scratch for one claim (kept here so building and decoding allocate
	// nothing).
	ck claim.Keys
	ca claim.Args
	co claim.Outcome
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
	if r.Code != claim.CodeAccepted || r.Replayed {
		return nil
	}
	if p.durable {
		return p.err // ProduceSync: the worker did it
	}
	return c.makeDurable(p)
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

// makeDurable produces the accepted claim and waits for the broker's acknowledgement.
// If the produce fails, void.lua gives back what the claim took - unless the settler
// already confirmed it from Kafka (the produce did land), in which case it is durable.
func (c *Claimer) makeDurable(p *pending) error {
	r := p.req
	rec := claim.Record{
		Version:      claim.Version,
		ClaimID:      r.ClaimID,
		RequestID:    r.RequestID,
		CampaignID:   r.CampaignID,
		BusinessLine: p.rt.bl,
		SKU:          r.SKU,
		UserID:       r.UserID,
		DeviceID:     r.DeviceID,
		IP:           r.IP,
		Value:        r.Value,
		ClaimedAtMs:  r.ClaimedAtMs,
		ExpiresAtMs:  r.ExpiresAtMs,
		OutboxID:     p.outbox,
		Channel:      r.Channel,
	}
	// The record's memory is its own: the produce is asynchronous and outlives any
	// request buffer.
	value := rec.AppendJSON(make([]byte, 0, 384))
	kr := &kgo.Record{Topic: kafkaopt.ClaimsTopic, Key: []byte(r.CampaignID), Value: value}
	if c.cfg.BeforeProduce != nil {
		c.cfg.BeforeProduce()
	}
	start := time.Now()
	ack := p.ack
	c.kcl.TryProduce(context.Background(), kr, func(_ *kgo.Record, err error) {
		ack <- err // buffered: a promise never blocks
	})
	timer := time.NewTimer(c.cfg.AckTimeout)
	var err error
	select {
	case err = <-ack:
		timer.Stop()
	case <-timer.C:
		// The record may still be delivered later; if it is, the settler finds the
		// record voided and skips it. The late callback writes into this channel, so
		// the pooled pending gets a fresh one instead of inheriting a stale answer.
		p.ack = make(chan error, 1)
		c.metrics.ackTimeouts.Inc()
		err = errAckTimeout
	}
	c.metrics.produceSeconds.Observe(time.Since(start).Seconds())
	if err != nil {
		c.metrics.produceErrors.Inc()
		return c.void(p, err)
	}
	// The broker has the record; the claim is durable only once its record is D. The
	// 200 waits for that mark (shared with other claims' marks, see markLoop): a claim
	// left A may be voided at its deadline by the settler or the relay, and a client
	// must never hold a 200 for a claim that is then given back.
	select {
	case c.marks <- mark{campaign: r.CampaignID, reqKey: p.reqKey, claimID: r.ClaimID, res: p.marked}:
	default:
		c.metrics.marksDropped.Inc()
		return c.void(p, errMarkFailed)
	}
	if <-p.marked {
		return nil
	}
	return c.void(p, errMarkFailed)
}

func (c *Claimer) void(p *pending, produceErr error) error {
	r, rt := p.req, p.rt
	keys := []string{rt.meta, rt.skuKey(r.SKU), p.reqKey, rt.users, rt.blKey, rt.outbox, rt.inflight,
		rkeys.PartnerQuotas(r.CampaignID)}
	// A void that gets no answer is tried again for up to voidRetryFor before the client
	// is answered: Redis may only be stalled, with this claim's durable mark queued
	// before the void - then the void answers "durable" and the client gets its 200
	// rather than a 503 for a claim that becomes a row (the chaos suite's redis-stall).
	deadline := time.Now().Add(voidRetryFor * c.cfg.RedisTimeout)
	var res int
	var err error
	for {
		ctx, cancel := context.WithTimeout(context.Background(), c.cfg.RedisTimeout)
		res, err = scripts.Void.Run(ctx, c.rdb, keys, r.ClaimID, r.UserID, r.Channel).Int()
		cancel()
		if err == nil || !time.Now().Before(deadline) || c.closed.Load() {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		// Redis is gone too. The claim stays A: it is never made a row from A. If the
		// record reached Kafka the settler waits for a mark and voids it past the
		// deadline; if not, the outbox relay voids it past MinAge. Either way what it
		// took is given back and the 503 stays true; a retry meanwhile hears in_flight.
		c.metrics.voids[voidFailed].Inc()
		c.log.Warn("void after failed produce also failed; it is retried in the background (else voided at its deadline)",
			"claim_id", r.ClaimID, "produce_err", produceErr, "void_err", err)
		go c.revoid([]unanswered{c.unansweredOf(p)}, 200*time.Millisecond)
		return fmt.Errorf("%w: produce: %v; void: %v", ErrUnavailable, produceErr, err)
	}
	switch res {
	case scripts.VoidConfirmed:
		c.metrics.voids[scripts.VoidConfirmed].Inc()
		return nil
	case scripts.VoidDone:
		c.metrics.voids[res].Inc()
		// A unit is on sale again. void.lua announced it on rkeys.Changes; this
		// gateway forgets at once, without waiting for its own copy of the message.
		c.routes.invalidate(r.CampaignID)
	case scripts.VoidAlready, scripts.VoidGone:
		c.metrics.voids[res].Inc()
	}
	return fmt.Errorf("%w: produce: %v", ErrUnavailable, produceErr)
}

// fill makes b a batch: first, then whatever else is already queued, then what arrives
// within BatchWait (timer is nil when BatchWait is 0), up to MaxBatch. While every
// worker is busy the queue grows, so batches grow with load by themselves. Each worker
// fills its own batch from the queue: there is no collector goroutine between the
// handlers and the workers, so a claim changes goroutine once on its way to Redis.
func (c *Claimer) fill(b *batch, first *pending, timer *time.Timer) {
	b.items = append(b.items[:0], first)
	for len(b.items) < c.cfg.MaxBatch {
		select {
		case p := <-c.in:
			b.items = append(b.items, p)
		default:
			if timer == nil {
				return
			}
			timer.Reset(c.cfg.BatchWait)
			for len(b.items) < c.cfg.MaxBatch {
				select {
				case p := <-c.in:
					b.items = append(b.items, p)
				case <-timer.C:
					return
				}
			}
			timer.Stop()
			return
		}
	}
}

func (c *Claimer) drainClosed() {
	for {
		select {
		case p := <-c.in:
			p.err = ErrClosed
			p.done <- struct{}{}
		default:
			return
		}
	}
}

func (c *Claimer) work() {
	defer c.wg.Done()
	defer c.workersDone.Done()
	b := &batch{items: make([]*pending, 0, c.cfg.MaxBatch)}
	var timer *time.Timer
	if c.cfg.BatchWait > 0 {
		timer = time.NewTimer(time.Hour)
		timer.Stop()
	}
	for {
		var first *pending
		select {
		case first = <-c.in:
		case <-c.quit:
			c.drainClosed()
			return
		}
		c.fill(b, first, timer)
		c.run(b)
		if c.cfg.ProduceMode == ProduceSync {
			c.produceBatch(b)
		}
		for _, p := range b.items {
			p.done <- struct{}{}
		}
		b.items = b.items[:0]
	}
}

// produceBatch is the ProduceSync baseline: the worker makes the batch's accepted claims
// durable (all produced at once, then every acknowledgement awaited) before it takes its
// next batch. Each claim's error (nil, or 503 after its void) is its answer.
func (c *Claimer) produceBatch(b *batch) {
	var wg sync.WaitGroup
	for _, p := range b.items {
		if p.err != nil || p.req.Code != claim.CodeAccepted || p.req.Replayed {
			continue
		}
		p.durable = true
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.err = c.makeDurable(p)
		}()
	}
	wg.Wait()
}

func errUnavailable(what string, err error) error {
	return fmt.Errorf("%w: %s: %v", ErrUnavailable, what, err)
}

// viewString views b as a string without copying (see appendKey for the lifetime).
func viewString(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

// run decides a batch: what the short-circuit can answer without claim.lua, then one
// script call for the rest, writing each claim's outcome.
func (c *Claimer) run(b *batch) {
	all := b.items
	b.items = c.dropStale(b)
	if len(b.items) > 0 {
		if items := c.shortCircuit(b); len(items) > 0 {
			c.runScript(b, items)
		}
	}
	b.items = all
}

// dropStale answers ErrOverloaded, without running them, the claims of b that waited in
// the queue longer than RedisTimeout, and returns the rest. Each Redis call is bounded
// by RedisTimeout, but while Redis stalls every worker waits out its own call and the
// queue grows behind them: without this a claim's wait would grow with the rate and the
// stall's length instead of staying near one timeout. Nothing was taken for a dropped
// claim; its client retries with the same request_id.
func (c *Claimer) dropStale(b *batch) []*pending {
	cutoff := time.Now().Add(-c.cfg.RedisTimeout)
	fresh := b.fresh[:0]
	for _, p := range b.items {
		if p.queued.Before(cutoff) {
			p.err = ErrOverloaded
			c.metrics.queueExpired.Inc()
			continue
		}
		fresh = append(fresh, p)
	}
	b.fresh = fresh
	return fresh
}

// runScript makes one script call for items and writes each claim's outcome.
func (c *Claimer) runScript(b *batch, items []*pending) {
	n := len(items)
	b.keys, b.args = claim.AppendHeader(b.keys, b.args, n, c.cfg.AcceptGrace.Milliseconds(), c.cfg.RejectTTL.Milliseconds())
	b.keybuf = b.keybuf[:0]
	k := &b.ck
	for _, p := range items {
		r, rt := p.req, p.rt
		*k = claim.Keys{Meta: rt.meta, SKU: rt.skuKey(r.SKU), Request: p.reqKey, Users: rt.users,
			BusinessLine: rt.blKey, Outbox: rt.outbox, Inflight: rt.inflight, Rejections: rt.rejects,
			Segment: rt.segKey, RiskRules: rt.riskRules, GlobalRules: rkeys.RiskGlobalRules,
			ShadowRejections: rt.shadowRejects, RiskIndex: rkeys.RiskIndex}
		k.VelocityDevice = b.key(rkeys.AppendVelocity(b.keybuf, r.CampaignID, rkeys.KindDevice, r.DeviceID))
		k.VelocityIP = b.key(rkeys.AppendVelocity(b.keybuf, r.CampaignID, rkeys.KindIP, r.IP))
		k.VelocityUser = b.key(rkeys.AppendVelocity(b.keybuf, r.CampaignID, rkeys.KindUser, r.UserID))
		k.BlockDevice = b.key(rkeys.AppendBlock(b.keybuf, rkeys.KindDevice, r.DeviceID))
		k.BlockIP = b.key(rkeys.AppendBlock(b.keybuf, rkeys.KindIP, r.IP))
		k.BlockUser = b.key(rkeys.AppendBlock(b.keybuf, rkeys.KindUser, r.UserID))
		k.FreezeDevice = b.key(rkeys.AppendFreeze(b.keybuf, rkeys.KindDevice, r.DeviceID))
		k.FreezeUser = b.key(rkeys.AppendFreeze(b.keybuf, rkeys.KindUser, r.UserID))
		k.FreezeWindowDevice = b.key(rkeys.AppendFreezeWindow(b.keybuf, rkeys.KindDevice, r.DeviceID))
		k.FreezeWindowUser = b.key(rkeys.AppendFreezeWindow(b.keybuf, rkeys.KindUser, r.UserID))
		k.PartnerQuotas = b.key(rkeys.AppendPartnerQuotas(b.keybuf, r.CampaignID))
		b.ca = claim.Args{RequestID: r.RequestID, ClaimID: p.claimID, CampaignID: r.CampaignID, SKU: r.SKU,
			UserID: r.UserID, DeviceID: r.DeviceID, IP: r.IP, Channel: r.Channel}
		b.keys, b.args = claim.AppendClaim(b.keys, b.args, k, &b.ca)
	}
	c.metrics.batchSize.Observe(float64(n))
	c.scriptClaims.Add(int64(n))
	ctx, cancel := context.WithTimeout(context.Background(), c.cfg.RedisTimeout)
	start := time.Now()
	res, err := scripts.Claim.Run(ctx, c.rdb, b.keys, b.args...).Slice()
	cancel()
	end := time.Now()
	c.metrics.scriptSeconds.Observe(end.Sub(start).Seconds())
	if err == nil && !claim.ResultsFor(res, n) {
		err = fmt.Errorf("claim script returned %d values for %d claims", len(res), n)
	}
	if err != nil {
		// A timeout is ambiguous: the script may have run (or still run, queued behind
		// a stall), and a script error may come after it accepted some claims. Their
		// clients hear 503, so none of them may become a row: each is voided now if
		// Redis answers (in the background: the worker is needed), and otherwise stays
		// A, never produced, until the outbox relay voids it past MinAge.
		c.metrics.redisErrors.Inc()
		c.log.Debug("claim script failed", "claims", n, "err", err)
		for _, p := range items {
			p.err = fmt.Errorf("%w: claim script: %v", ErrUnavailable, err)
		}
		c.voidUnanswered(items)
		return
	}
	c.observeClock(claim.DecidedAtMs(res), start, end)
	for i, p := range items {
		o := &b.co
		claim.DecodeResult(res, i, o)
		out := &p.req.Outcome
		*out = Outcome{Code: o.Code, Replayed: o.Replayed, ClaimID: o.ClaimID, Value: o.Value,
			ClaimedAtMs: o.ClaimedAtMs, ExpiresAtMs: o.ExpiresAtMs, RetryAfterMs: o.RetryAfterMs,
			DecidedAtMs: o.DecidedAtMs, Risk: risk.Seen{Device: o.SeenDevice, IP: o.SeenIP, User: o.SeenUser,
				FreezeDevice: o.SeenFreezeDevice, FreezeUser: o.SeenFreezeUser, Flags: risk.Flags(o.Flags)}}
		p.outbox = o.OutboxID
		if out.Code == claim.CodeSoldOut && !out.Replayed {
			// Stock was <= 0 when this script ran. Only this claim's route learns it:
			// if a change was announced since the route was taken, it is dead already.
			if s, ok := p.rt.skus[p.req.SKU]; ok {
				s.soldOut.Store(true)
			}
		}
		if c.cfg.Decisions != nil && risk.Recordable(out.Code) {
			r := p.req
			d := risk.Decision{
				TimeMs: out.DecidedAtMs, CampaignID: r.CampaignID, SKU: r.SKU, UserID: r.UserID,
				DeviceID: r.DeviceID, IP: r.IP, RequestID: r.RequestID, Code: out.Code,
				Replayed: out.Replayed, ClaimID: out.ClaimID, RetryAfterMs: out.RetryAfterMs, Seen: out.Risk,
			}
			c.cfg.Decisions.Record(&d)
		}
	}
}

// key returns the name just appended to b.keybuf (buf is the grown buffer) as a string
// that views the buffer (no copy). The old part of keybuf is never written again while
// the call is built, so a view stays valid even when a later append moves the buffer
// (the view keeps the old array alive); the next batch overwrites it only after this
// script call returned and go-redis no longer holds the keys.
func (b *batch) key(buf []byte) string {
	start := len(b.keybuf)
	b.keybuf = buf
	k := buf[start:]
	return unsafe.String(unsafe.SliceData(k), len(k))
}

type mark struct {
	campaign, reqKey, claimID string
	// res receives whether durable.lua marked the claim D. Its sender waits for it, so
	// the strings above stay valid until it is sent.
	res chan<- bool
}

// markLoop batches durable marks per campaign (the script's keys must share a slot):
// the first mark waits up to MarkLinger for others, up to maxMarks, then each campaign's
// marks go in one durable.lua call. Every mark taken is answered on its res channel
// exactly once: true when durable.lua reports the claim D, false otherwise (the call
// failed, or the claim was voided first) - then its client hears 503.
func (c *Claimer) markLoop() {
	defer c.wg.Done()
	const maxMarks = 256
	byCampaign := make(map[string][]mark)
	flush := func() {
		for camp, ms := range byCampaign {
			keys := make([]string, len(ms))
			args := make([]any, len(ms))
			for i, m := range ms {
				keys[i], args[i] = m.reqKey, m.claimID
			}
			c.metrics.markBatch.Observe(float64(len(ms)))
			ctx, cancel := context.WithTimeout(context.Background(), c.cfg.RedisTimeout)
			res, err := scripts.Durable.Run(ctx, c.rdb, keys, args...).Int64Slice()
			cancel()
			if err == nil && len(res) != len(ms) {
				err = fmt.Errorf("durable.lua answered %d marks for %d", len(res), len(ms))
			}
			if err != nil {
				c.metrics.marksDropped.Add(float64(len(ms)))
			}
			for i, m := range ms {
				m.res <- err == nil && res[i] == 1
			}
			delete(byCampaign, camp)
		}
	}
	add := func(m mark) { byCampaign[m.campaign] = append(byCampaign[m.campaign], m) }
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		stop := false
		select {
		case m := <-c.marks:
			add(m)
			timer.Reset(c.cfg.MarkLinger)
		gather:
			for n := 1; n < maxMarks; n++ {
				select {
				case m := <-c.marks:
					add(m)
				case <-timer.C:
					break gather
				case <-c.quit:
					stop = true
					break gather
				}
			}
			timer.Stop()
		case <-c.quit:
			stop = true
		}
		if stop {
			// Every mark already queued is written before Close returns.
			for len(c.marks) > 0 {
				add(<-c.marks)
			}
			flush()
			return
		}
		flush()
	}
}

// Pending reports an accepted claim that is not yet committed in Postgres, from the
// campaign's inflight hash and the request's idempotency record.
func (c *Claimer) Pending(ctx context.Context, claimID string) (Outcome, Request, bool, error) {
	camp := CampaignOfClaim(claimID)
	if camp == "" {
		return Outcome{}, Request{}, false, nil
	}
	reqID, err := c.rdb.HGet(ctx, rkeys.Inflight(camp), claimID).Result()
	if err == redis.Nil {
		return Outcome{}, Request{}, false, nil
	}
	if err != nil {
		return Outcome{}, Request{}, false, err
	}
	rec, err := c.rdb.Get(ctx, rkeys.Request(camp, reqID)).Result()
	if err == redis.Nil {
		return Outcome{}, Request{}, false, nil
	}
	if err != nil {
		return Outcome{}, Request{}, false, err
	}
	f, ok := claim.ParseIdem(rec)
	if !ok || f.ClaimID != claimID || f.State == claim.IdemVoided || f.State == claim.IdemRejected {
		return Outcome{}, Request{}, false, nil
	}
	o := Outcome{Code: claim.CodeAccepted, ClaimID: claimID, Value: f.Value, ClaimedAtMs: f.ClaimedAtMs, ExpiresAtMs: f.ExpiresAtMs}
	return o, Request{RequestID: reqID, CampaignID: camp, SKU: f.SKU, UserID: f.UserID, DeviceID: f.DeviceID}, true, nil
}
