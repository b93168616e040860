package relay

import (
	"context"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/flashgate/flashgate/internal/rkeys"
	"github.com/flashgate/flashgate/scripts"
)

// leaseKey is the campaign's relay lease: the token of the relay working its outbox. It
// carries the campaign's tag, next to the outbox.
func leaseKey(campaign string) string { return "fg:{" + campaign + "}:relaylease" }

// lease takes or extends the campaign's lease for LeaseTTL and reports whether this
// relay holds it. A relay that dies keeps the campaign at most LeaseTTL; two relays
// never both work it while the lease is held (a pass outliving LeaseTTL can overlap the
// next holder's, which only costs a duplicate publication the settler ignores).
func (r *Relay) lease(ctx context.Context, campaign string) (bool, error) {
	key := leaseKey(campaign)
	ok, err := r.rdb.SetNX(ctx, key, r.token, r.cfg.LeaseTTL).Result()
	if err != nil {
		return false, err
	}
	if ok {
		return true, nil
	}
	// Held: by this relay (extend it) or by another (leave the campaign alone).
	n, err := scripts.Lease.Run(ctx, r.rdb, []string{key}, r.token, r.cfg.LeaseTTL.Milliseconds()).Int()
	if err != nil && err != redis.Nil {
		return false, err
	}
	return n == 1, nil
}

// void gives back the claims of es that are still A: their clients were never answered
// 200 (the gateway answers 200 only after durable.lua marked a claim D), so none may
// become a row. void.lua acts only on a record that is the entry's claim and still A, so
// a gateway's mark that lands first wins and the claim is left for publication next pass.
func (r *Relay) void(ctx context.Context, campaign string, es []entry) (int, error) {
	n := 0
	for _, e := range es {
		rec := e.rec
		res, err := scripts.Void.Run(ctx, r.rdb,
			rkeys.VoidKeys(campaign, rec.SKU, rec.RequestID, rec.BusinessLine), rec.ClaimID, rec.UserID, rec.Channel).Int()
		if err != nil {
			return n, fmt.Errorf("relay %s: void claim %s: %w", campaign, rec.ClaimID, err)
		}
		if res == scripts.VoidDone {
			n++
			r.log.Info("outbox relay voided a claim never made durable", "campaign", campaign, "claim_id", rec.ClaimID)
		}
	}
	return n, nil
}
