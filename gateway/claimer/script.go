package claimer

// Script marshalling: one claim.lua call for a batch, built and decoded through the
// codec in internal/claim (batch.go).

import (
	"context"
	"fmt"
	"time"
	"unsafe"

	"github.com/flashgate/flashgate/internal/claim"
	"github.com/flashgate/flashgate/internal/risk"
	"github.com/flashgate/flashgate/internal/rkeys"
	"github.com/flashgate/flashgate/scripts"
)

func errUnavailable(what string, err error) error {
	return fmt.Errorf("%w: %s: %v", ErrUnavailable, what, err)
}

// viewString views b as a string without copying (see appendKey for the lifetime).
func viewString(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

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
			ShadowRejections: rt.shadowRejects, RiskIndex: rkeys.RiskIndex,
			Pushes: rt.pushes, CodePool: rt.poolKey(r.SKU)}
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
			UserID: r.UserID, DeviceID: r.DeviceID, IP: r.IP, Channel: r.Channel, Draw: r.drawArg}
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
		if p.rt.lottery != nil {
			out.Lottery = true
			switch {
			case out.Code == claim.CodeAccepted && o.Prize != "":
				p.req.SKU = o.Prize // a replay's prize is the record's, not this attempt's pick
			case out.Code == claim.CodeNoPrize:
				p.req.SKU = ""
			}
		}
		p.code = o.PartnerCode
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
