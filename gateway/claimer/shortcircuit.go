package claimer

import (
	"context"
	"errors"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashgate/flashgate/internal/claim"
	"github.com/flashgate/flashgate/internal/risk"
	"github.com/flashgate/flashgate/internal/rkeys"
)

// The short-circuit (DESIGN.md "The path of a claim"). Once claim.lua has said a SKU is
// sold out, or the campaign's window is clearly not open by the Redis clock, a fresh
// claim is answered without running claim.lua. What stays is the idempotency check, in
// one pipelined round trip per batch: SET <request key> <rejection> NX PX <RejectTTL>
// GET writes the same rejection record claim.lua would have written when the request_id
// has none, and returns the record when it has one (for not_started, which claim.lua
// does not remember, a plain GET: nothing is written); only those requests go on to
// claim.lua, which replays accepted claims (200, same claim_id), rejections, in-flight
// claims and key reuse (422) exactly as before.
//
// A conclusion lives on the campaign's route and dies with it: at once when a change is
// announced on rkeys.Changes (void.lua, release.lua recycling, rebuild.lua, a campaign
// PUT, pause/resume) or when this gateway voids a claim itself; on every subscription
// reconnect (messages may have been missed, so every route dies); and at the latest
// after RouteTTL, in case a message is lost some other way. While the subscription is
// not confirmed nothing is short-circuited.

// clockSample says what the Redis clock read (the TIME inside claim.lua) during a call
// that ended at the local monotonic instant at and took rttMs (rounded up).
type clockSample struct {
	redisMs int64
	at      time.Time
	rttMs   int64
}

// clockMaxAge is how long a sample is trusted. A sold-out or closed stampede sends a
// batch to claim.lua at least once per RouteTTL anyway, which refreshes it.
const clockMaxAge = 10 * time.Second

// observeClock records a claim.lua decision time seen between start and end.
func (c *Claimer) observeClock(redisMs int64, start, end time.Time) {
	if redisMs <= 0 {
		return
	}
	rtt := end.Sub(start).Milliseconds() + 1
	if cur := c.clock.Load(); cur != nil && end.Sub(cur.at) < 50*time.Millisecond && cur.rttMs <= rtt {
		return // a recent sample at least as tight: keep it (and skip an allocation)
	}
	c.clock.Store(&clockSample{redisMs: redisMs, at: end, rttMs: rtt})
}

// redisNow bounds the Redis clock at the local instant now: it is within [lo, hi]
// milliseconds (monotonic time elapsed since the sample, so a step of the local wall
// clock changes nothing). ok is false without a recent sample.
func (c *Claimer) redisNow(now time.Time) (lo, hi int64, ok bool) {
	s := c.clock.Load()
	if s == nil {
		return 0, 0, false
	}
	d := now.Sub(s.at)
	if d < 0 || d > clockMaxAge {
		return 0, 0, false
	}
	lo = s.redisMs + d.Milliseconds()
	return lo, lo + s.rttMs + 1, true
}

// shortCode returns the answer a claim gets without claim.lua, or 0 when only the
// script can decide it. It follows claim.lua's order: a paused campaign or an unknown
// SKU goes to the script; the window comes before stock; within ClockMargin of either
// edge of the window the script decides.
func (c *Claimer) shortCode(p *pending, lo, hi int64) int {
	rt := p.rt
	if rt.dead.Load() || rt.paused || rt.startsMs <= 0 || rt.endsMs <= rt.startsMs {
		return 0
	}
	s, ok := rt.skus[p.req.SKU]
	if !ok {
		return 0
	}
	m := c.cfg.ClockMargin.Milliseconds()
	switch {
	case hi+m < rt.startsMs:
		return claim.CodeNotStarted
	case lo-m >= rt.endsMs:
		return claim.CodeEnded
	case lo-m < rt.startsMs || hi+m >= rt.endsMs:
		return 0 // too close to an edge to know which side Redis is on
	case s.soldOut.Load():
		return claim.CodeSoldOut
	}
	return 0
}

// shortCircuit answers what it can of b without claim.lua and returns the claims that
// still need the script (a prefix-preserving subset of b.items, in b.rest).
func (c *Claimer) shortCircuit(b *batch) []*pending {
	if c.cfg.DisableShortCircuit || !c.subscribed.Load() {
		return b.items
	}
	now := time.Now()
	lo, hi, ok := c.redisNow(now)
	if !ok {
		return b.items
	}
	b.rest, b.cand = b.rest[:0], b.cand[:0]
	for _, p := range b.items {
		if p.short = c.shortCode(p, lo, hi); p.short == 0 {
			b.rest = append(b.rest, p)
		} else {
			b.cand = append(b.cand, p)
		}
	}
	if len(b.cand) == 0 {
		return b.items
	}

	// One round trip: for each candidate, write its rejection record unless its
	// request_id already has one (then GET returns that record and claim.lua decides).
	var ttl any = c.cfg.RejectTTL.Milliseconds() // boxed once per batch, not per claim
	pipe := c.rdb.Pipeline()
	b.cmds = b.cmds[:0]
	b.valbuf = b.valbuf[:0]
	for _, p := range b.cand {
		if p.short == claim.CodeNotStarted || p.short == claim.CodeSoldOut {
			// not_started and sold_out are never remembered (claim.lua neither): only
			// look for a record the request_id may already have (then claim.lua
			// replays it).
			b.cmds = append(b.cmds, pipe.Do(context.Background(), "get", p.reqKey))
			continue
		}
		b.cmds = append(b.cmds, pipe.Do(context.Background(), "set", p.reqKey, b.rejection(p), "px", ttl, "nx", "get"))
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.cfg.RedisTimeout)
	_, err := pipe.Exec(ctx)
	cancel()
	if err != nil && !errors.Is(err, redis.Nil) {
		// Some records may have been written: a retry replays them through claim.lua,
		// which gives the answer this batch would have given. Nothing was taken.
		c.metrics.redisErrors.Inc()
		for _, p := range b.cand {
			p.err = errUnavailable("idempotency check", err)
		}
		return b.rest
	}
	decided := (lo + hi) / 2
	for i, p := range b.cand {
		switch err := b.cmds[i].Err(); {
		case err == nil:
			b.rest = append(b.rest, p) // it has a record: claim.lua replays it
			continue
		case !errors.Is(err, redis.Nil):
			p.err = errUnavailable("idempotency check", err)
			continue
		}
		p.req.Outcome = Outcome{Code: p.short, DecidedAtMs: decided, Risk: risk.NotEvaluated}
		c.countRejection(p.rt.rejects, p.short)
		c.metrics.shortCircuited[p.short].Inc()
		c.shortClaims.Add(1)
		if c.cfg.Decisions != nil {
			r := p.req
			d := risk.Decision{
				TimeMs: decided, CampaignID: r.CampaignID, SKU: r.SKU, UserID: r.UserID,
				DeviceID: r.DeviceID, IP: r.IP, RequestID: r.RequestID, Code: p.short, Seen: r.Risk,
			}
			c.cfg.Decisions.Record(&d)
		}
	}
	return b.rest
}

// rejection returns claim.lua's rejection record for p ("R\t<code>\t\t\t\t\t<sku>\t<user>\t<device>"),
// as a view of b.valbuf (see appendKey: the views stay valid until the next batch).
func (b *batch) rejection(p *pending) string {
	start := len(b.valbuf)
	buf := claim.AppendRejection(b.valbuf, p.short, p.req.SKU, p.req.UserID, p.req.DeviceID)
	b.valbuf = buf
	return viewString(buf[start:])
}

// Rejection counts of short-circuited claims (fg:{c}:rej, the campaign figures' source)
// are counted here and added to Redis by flushLoop every RejectFlush, and on Close.

type rejCount struct {
	key  string // the campaign's rejections hash (owned by its route: never a request view)
	code int
}

type rejCounts struct {
	mu sync.Mutex
	m  map[rejCount]int64
}

func (c *Claimer) countRejection(key string, code int) {
	c.rej.mu.Lock()
	c.rej.m[rejCount{key, code}]++
	c.rej.mu.Unlock()
}

func (c *Claimer) flushRejections() {
	c.rej.mu.Lock()
	if len(c.rej.m) == 0 {
		c.rej.mu.Unlock()
		return
	}
	m := c.rej.m
	c.rej.m = make(map[rejCount]int64, len(m))
	c.rej.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), c.cfg.RedisTimeout)
	defer cancel()
	_, err := c.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for k, n := range m {
			p.HIncrBy(ctx, k.key, strconv.Itoa(k.code), n)
		}
		return nil
	})
	if err != nil {
		// Put them back for the next flush. A failed HINCRBY may still have been
		// applied; a count may then be high by what that flush carried (figures only).
		c.metrics.redisErrors.Inc()
		c.rej.mu.Lock()
		for k, n := range m {
			c.rej.m[k] += n
		}
		c.rej.mu.Unlock()
	}
}

func (c *Claimer) flushLoop() {
	defer c.wg.Done()
	t := time.NewTicker(c.cfg.RejectFlush)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			c.flushRejections()
		case <-c.quit:
			// The workers are done (Close waits for them) or finishing; flush once they
			// are, so no count from the last batches is left behind.
			c.workersDone.Wait()
			c.flushRejections()
			return
		}
	}
}

// Forget drops everything the claimer concluded about a campaign (sold-out SKUs, the
// window), so its next claim goes to claim.lua. The gateway calls it after a campaign
// change it made itself (catalog.OnChange); other changes arrive on rkeys.Changes.
func (c *Claimer) Forget(campaign string) {
	c.routes.invalidate(campaign)
}

// listen follows rkeys.Changes. Short-circuits are allowed only while the subscription
// is confirmed; every (re)subscription forgets everything, since messages published
// while it was down are lost.
func (c *Claimer) listen() {
	defer c.wg.Done()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for ctx.Err() == nil {
		ps := c.rdb.Subscribe(ctx, rkeys.Changes)
		// A receive blocked on the socket does not watch ctx: closing the subscription
		// is what ends it when the claimer closes.
		stop := make(chan struct{})
		go func() {
			select {
			case <-c.quit:
				cancel()
				ps.Close()
			case <-stop:
			}
		}()
		c.follow(ctx, ps)
		close(stop)
		ps.Close()
		c.subscribed.Store(false)
		c.routes.invalidateAll()
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// follow reads one subscription until it fails or goes silent: a ping unanswered within
// the next receive timeout means the connection is gone without an error.
func (c *Claimer) follow(ctx context.Context, ps *redis.PubSub) {
	pinged := false
	for {
		msg, err := ps.ReceiveTimeout(ctx, 2*time.Second)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() && !pinged && ctx.Err() == nil {
				pinged = true
				if err := ps.Ping(ctx); err == nil {
					continue
				}
			}
			if ctx.Err() == nil {
				c.log.Debug("change subscription lost; short-circuits off until it is back", "err", err)
			}
			return
		}
		pinged = false
		switch m := msg.(type) {
		case *redis.Subscription:
			// (Re)subscribed: forget first, then allow short-circuits again.
			c.routes.invalidateAll()
			c.subscribed.Store(true)
		case *redis.Message:
			if camp := rkeys.CampaignOfKey(m.Payload); camp != "" {
				c.routes.invalidate(camp)
				c.metrics.changes.Inc()
				c.changes.Add(1)
			}
		}
	}
}

// Stats are counts for tests and benchmarks (the metrics carry the same).
type Stats struct {
	// ScriptClaims is how many claims were sent to claim.lua.
	ScriptClaims int64
	// ShortCircuited is how many claims were answered without it.
	ShortCircuited int64
	// Changes is how many change messages were received.
	Changes int64
	// Subscribed is whether the change subscription is confirmed.
	Subscribed bool
}

// Stats returns the claimer's counts.
func (c *Claimer) Stats() Stats {
	return Stats{ScriptClaims: c.scriptClaims.Load(), ShortCircuited: c.shortClaims.Load(),
		Changes: c.changes.Load(), Subscribed: c.subscribed.Load()}
}
