package admin

import (
	"errors"

	"github.com/valyala/fasthttp"

	"github.com/flashgate/flashgate/internal/catalog"
	"github.com/flashgate/flashgate/internal/delivery"
)

// lotteryReport answers GET /admin/v1/campaigns/{id}/report?table=lottery: draws, wins
// per prize, win rate, value given, deliveries, and the chi-square of the draws against
// the configured odds (catalog.Lottery).
func (s *Server) lotteryReport(ctx *fasthttp.RequestCtx, id string) {
	if s.cfg.Audit == nil {
		writeJSON(ctx, fasthttp.StatusNotFound, bodyNotFound)
		return
	}
	c, cancel := opContext()
	defer cancel()
	rep, err := catalog.Lottery(c, s.cfg.Audit, id)
	if errors.Is(err, catalog.ErrNotLottery) {
		s.writeValue(ctx, fasthttp.StatusNotFound, map[string]string{"error": "not_a_lottery"})
		return
	}
	if err != nil {
		s.writeErr(ctx, err)
		return
	}
	s.writeValue(ctx, fasthttp.StatusOK, rep)
}

// POST /admin/v1/claims/{id}/delivery/retry (DESIGN.md "Lottery", "Prize delivery"): an
// operator, after the fulfilment side was fixed, makes a dead-lettered prize delivery
// due again (internal/delivery Retry: only a failed one; a delivered prize is never
// called again). Audited with the delivery's state before and after.

const snapDelivery = `SELECT to_jsonb(d) - 'lease_until' - 'next_at' FROM deliveries d WHERE claim_id = $1`

func (s *Server) retryDelivery(ctx *fasthttp.RequestCtx, id string) {
	if s.cfg.Audit == nil {
		writeJSON(ctx, fasthttp.StatusNotFound, bodyNotFound)
		return
	}
	c, cancel := opContext()
	defer cancel()
	err := delivery.Retry(c, s.cfg.Audit, id)
	switch {
	case errors.Is(err, delivery.ErrNoDelivery):
		s.writeValue(ctx, fasthttp.StatusNotFound, map[string]string{"error": "no_delivery",
			"message": "the claim has no delivery (not settled yet, or its SKU has no webhook)"})
		return
	case errors.Is(err, delivery.ErrNotFailed):
		st, _, _ := delivery.Get(c, s.cfg.Audit, id)
		s.writeValue(ctx, fasthttp.StatusConflict, map[string]any{"error": "not_failed",
			"message": "only a dead-lettered (failed) delivery can be retried", "delivery": st})
		return
	case err != nil:
		s.writeErr(ctx, err)
		return
	}
	st, _, err := delivery.Get(c, s.cfg.Audit, id)
	if err != nil {
		s.writeErr(ctx, err)
		return
	}
	s.log.Info("prize delivery retried", "claim", id, "actor", actorOf(ctx))
	s.writeValue(ctx, fasthttp.StatusOK, map[string]any{"claim_id": id, "delivery": st})
}
