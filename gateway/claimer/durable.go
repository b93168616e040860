package claimer

// Durability: the one home of what happens to an accepted claim after claim.lua (DESIGN.md
// "Claimer stages"): produce to flash.claims, wait for the ack, the durable mark (A -> D,
// batched by markLoop), and the void when any of it fails.

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flashgate/flashgate/internal/claim"
	"github.com/flashgate/flashgate/internal/kafkaopt"
	"github.com/flashgate/flashgate/internal/rkeys"
	"github.com/flashgate/flashgate/scripts"
)

// voidRetryFor is how many RedisTimeouts a failed void is retried for before its
// client hears 503 (and the void goes on in the background).
const voidRetryFor = 3

// durability is Do's one step for an accepted, freshly decided claim: its answer is the
// outcome of makeDurable, which runs exactly once per attempt - here (ProduceAsync, on
// the client's goroutine, so the worker is free for the next batch) or already in the
// worker (ProduceSync, produceBatch, which marks p.durable). Nothing else produces,
// marks or voids an accepted claim.
func (c *Claimer) durability(p *pending) error {
	if p.durable {
		return p.err
	}
	return c.makeDurable(p)
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
		Code:         p.code,
	}
	if r.Lottery {
		rec.Draw = claim.Draw{OddsVersion: r.DrawVersion, R: r.DrawR, Pick: r.DrawPick}.String()
	}
	// The record's memory is its own: the produce is asynchronous and outlives any
	// request buffer.
	value := rec.AppendJSON(make([]byte, 0, 384))
	kr := &kgo.Record{Topic: kafkaopt.ClaimsTopic, Key: kafkaopt.ClaimKey(r.ClaimID), Value: value}
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
		rkeys.PartnerQuotas(r.CampaignID), rt.pushes, rt.poolKey(r.SKU)}
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
