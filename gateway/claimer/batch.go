package claimer

// Batching: the queue in front of Redis, the workers that fill a batch from it and run
// it (short-circuit, then one claim.lua call), and the claims dropped for waiting too long.

import (
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashgate/flashgate/internal/claim"
)

type pending struct {
	req     *Request
	rt      *route
	claimID string
	reqKey  string
	outbox  string
	// code is the partner code claim.lua handed out ("" none): it goes into the record.
	code string
	err  error
	done chan struct{}
	ack  chan error
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
