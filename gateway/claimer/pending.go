package claimer

// The pending lookup: an accepted claim not yet committed in Postgres, read from Redis.

import (
	"context"

	"github.com/redis/go-redis/v9"

	"github.com/flashgate/flashgate/internal/claim"
	"github.com/flashgate/flashgate/internal/rkeys"
)

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
