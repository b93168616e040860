package api

import (
	"context"
	"encoding/json"
	"errors"

	"github.com/valyala/fasthttp"

	"github.com/flashgate/flashgate/gateway/claimer"
)

// GET /v1/campaigns/{id}/odds (CONTRACT.md "Redemption kinds"; DESIGN.md "Lottery"): a
// lottery's odds in force, public (no token: the odds a user faces are no secret), read
// from Redis - the state draws are decided on. Not a hot path: encoding/json.

var (
	pathCampaignsPrefix = []byte("/v1/campaigns/")
	suffixOdds          = []byte("/odds")
	bodyUnknownCampaign = []byte(`{"error":"unknown_campaign"}`)
	bodyNotLottery      = []byte(`{"error":"not_a_lottery"}`)
)

func (s *Server) odds(ctx *fasthttp.RequestCtx, id []byte) {
	if !validID(id) {
		writeJSON(ctx, fasthttp.StatusNotFound, bodyUnknownCampaign)
		return
	}
	c, cancel := context.WithTimeout(context.Background(), s.cfg.LookupTimeout)
	defer cancel()
	o, err := s.claims.Odds(c, string(id))
	switch {
	case errors.Is(err, claimer.ErrNotLottery):
		writeJSON(ctx, fasthttp.StatusNotFound, bodyNotLottery)
		return
	case err != nil:
		s.log.Warn("odds lookup failed", "campaign", string(id), "err", err)
		ctx.Response.Header.SetBytesKV(hdrRetryAfter, valOne)
		writeJSON(ctx, answerUnavailable.status, answerUnavailable.body)
		return
	case o == nil:
		writeJSON(ctx, fasthttp.StatusNotFound, bodyUnknownCampaign)
		return
	}
	b, err := json.Marshal(o)
	if err != nil {
		writeJSON(ctx, fasthttp.StatusInternalServerError, []byte(`{"error":"internal"}`))
		return
	}
	ctx.Response.Header.Set("Cache-Control", "public, max-age=1")
	writeJSON(ctx, fasthttp.StatusOK, b)
}
