package settle

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/flashgate/flashgate/internal/recovery"
	"github.com/flashgate/flashgate/internal/rkeys"
	"github.com/flashgate/flashgate/scripts"
)

// undecidedMetrics count what the settler did with claims it read while their record
// was still A.
type undecidedMetrics struct {
	waits  prometheus.Counter // confirm asked again after a wait
	voided prometheus.Counter // voided past VoidAfter, then skipped
}

func newUndecidedMetrics(reg prometheus.Registerer) *undecidedMetrics {
	m := &undecidedMetrics{
		waits: prometheus.NewCounter(prometheus.CounterOpts{Name: "flashgate_settler_undecided_waits_total",
			Help: "Times a batch waited for claims read from Kafka whose record was still A (acknowledged, not yet marked durable by its gateway), then asked again."}),
		voided: prometheus.NewCounter(prometheus.CounterOpts{Name: "flashgate_settler_undecided_voided_total",
			Help: "Claims read from Kafka that were still A past the void deadline: voided (given back) and not written; their client was answered 503."}),
	}
	if reg != nil {
		reg.MustRegister(m.waits, m.voided)
	}
	return m
}

// settleUndecided resolves every claim of groups that confirm.lua answered undecided
// (record A): it asks again after a short wait - the gateway's durable mark usually
// follows the broker's ack within milliseconds, and the settler can read the record in
// between - and once a claim is VoidAfter old it voids it (void.lua, atomic against the
// gateway's durable.lua: exactly one of them wins) and asks once more, which then
// answers skip (voided) or write (the gateway's mark won). It returns once no claim is
// undecided, or ctx's error.
func (s *Settler) settleUndecided(ctx context.Context, groups []campaignBatch) error {
	wait := 5 * time.Millisecond
	for {
		var waiting []campaignBatch
		for _, g := range groups {
			var its []*item
			for _, it := range g.items {
				if it.code == scripts.ConfirmUndecided {
					its = append(its, it)
				}
			}
			if len(its) > 0 {
				waiting = append(waiting, campaignBatch{campaign: g.campaign, items: its})
			}
		}
		if len(waiting) == 0 {
			return nil
		}
		now := time.Now()
		var due []*item
		next := now.Add(time.Hour)
		for _, g := range waiting {
			for _, it := range g.items {
				deadline := time.UnixMilli(it.rec.ClaimedAtMs).Add(s.cfg.VoidAfter)
				if !now.Before(deadline) {
					due = append(due, it)
				} else if deadline.Before(next) {
					next = deadline
				}
			}
		}
		if len(due) > 0 {
			if err := s.retry(ctx, "void", s.m.redisConfirm, func(ctx context.Context) error { return s.voidDue(ctx, due) }); err != nil {
				return err
			}
		} else {
			s.m.undecided.waits.Inc()
			sleep(ctx, min(wait, next.Sub(now)))
			if ctx.Err() != nil {
				return ctx.Err()
			}
			wait = min(2*wait, 200*time.Millisecond)
		}
		err := s.retry(ctx, "confirm", s.m.redisConfirm, func(ctx context.Context) error {
			for i := range waiting {
				if err := s.confirm(ctx, &waiting[i]); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
}

// voidDue voids the claims past their deadline. A void that finds the claim durable
// (the gateway's mark won the race) or already voided changes nothing; the confirm
// that follows tells which.
//
// Except on a campaign whose run id stamp is not this Redis's (restarted from an older
// AOF copy, or a lagging replica promoted, and not rebuilt yet): there an A may be the
// rolled-back copy of a claim that was marked D and answered 200, so it is not voided
// but written, like a claim with no trace (it was acknowledged by Kafka: DESIGN.md
// "What is durable when"). Recovery waits for the settler before it rebuilds, so this is
// decided while the stamp still differs.
func (s *Settler) voidDue(ctx context.Context, due []*item) error {
	rolled, err := s.rolledBack(ctx, due)
	if err != nil {
		return err
	}
	for _, it := range due {
		if rolled[it.rec.CampaignID] {
			r := it.rec
			ctx, cancel := context.WithTimeout(ctx, s.cfg.RedisTimeout)
			err := scripts.Durable.Run(ctx, s.rdb, []string{rkeys.Request(r.CampaignID, r.RequestID)}, r.ClaimID).Err()
			cancel()
			if err != nil {
				return fmt.Errorf("mark rolled-back claim %s: %w", r.ClaimID, err)
			}
			s.log.Warn("claim read from Kafka is A on a Redis that is not the run its campaign was stamped on: written, not voided (its D may have been rolled back)",
				"claim_id", r.ClaimID, "campaign", r.CampaignID)
			continue
		}
		r := it.rec
		ctx, cancel := context.WithTimeout(ctx, s.cfg.RedisTimeout)
		res, err := scripts.Void.Run(ctx, s.rdb,
			rkeys.VoidKeys(r.CampaignID, r.SKU, r.RequestID, r.BusinessLine), r.ClaimID, r.UserID, r.Channel).Int()
		cancel()
		if err != nil {
			return fmt.Errorf("void undecided claim %s: %w", r.ClaimID, err)
		}
		if res == scripts.VoidDone {
			s.m.undecided.voided.Inc()
			s.log.Warn("claim read from Kafka was never marked durable by its gateway: voided past the deadline, not written",
				"claim_id", r.ClaimID, "campaign", r.CampaignID, "void_after", s.cfg.VoidAfter.String())
		}
	}
	return nil
}

// rolledBack reports the campaigns of due whose meta carries a run id stamp other than
// this Redis server's.
func (s *Settler) rolledBack(ctx context.Context, due []*item) (map[string]bool, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.RedisTimeout)
	defer cancel()
	run, err := recovery.RunID(ctx, s.rdb)
	if err != nil {
		return nil, fmt.Errorf("undecided claims: %w", err)
	}
	out := map[string]bool{}
	seen := map[string]bool{}
	for _, it := range due {
		c := it.rec.CampaignID
		if seen[c] {
			continue
		}
		seen[c] = true
		rid, err := s.rdb.HGet(ctx, rkeys.Meta(c), rkeys.FieldRunID).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			return nil, fmt.Errorf("undecided claims: campaign %s run id: %w", c, err)
		}
		out[c] = rid != "" && rid != run
	}
	return out, nil
}
