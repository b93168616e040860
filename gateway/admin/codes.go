package admin

import (
	"github.com/valyala/fasthttp"

	"github.com/flashgate/flashgate/internal/catalog"
)

// ActionCodes is the audit action of a partner code import (migration 0015's CHECK).
const ActionCodes = "admin.codes"

// snapCodes is the audited state of a SKU's pool: its count of imported codes, never the
// codes (the audit trail is read by every admin). The id is "<campaign>/<sku>" (neither
// contains '/').
const snapCodes = `SELECT jsonb_build_object('imported', (SELECT count(*) FROM sku_codes
	WHERE campaign_id = split_part($1, '/', 1) AND sku = split_part($1, '/', 2)))`

var bodyTooLarge = []byte(`{"error":"too_large","message":"at most 8 MiB of codes per PUT; send the rest in another PUT (codes are appended)"}`)

// codes serves PUT (import, audited) and GET (counts) of
// /admin/v1/campaigns/{id}/skus/{sku}/codes (DESIGN.md "Partner code pools").
func (s *Server) codes(ctx *fasthttp.RequestCtx, campaign, sku string) {
	switch {
	case ctx.IsPut():
		if len(ctx.Request.Body()) > catalog.MaxCodesBody {
			writeJSON(ctx, fasthttp.StatusRequestEntityTooLarge, bodyTooLarge)
			return
		}
		s.audited(ctx, ActionCodes, "codes:"+campaign+"/"+sku, snapCodes, campaign+"/"+sku, func() bool {
			c, cancel := opContext()
			defer cancel()
			res, err := s.cat.PutCodes(c, campaign, sku, ctx.Request.Body())
			if err != nil {
				s.writeErr(ctx, err)
				return false
			}
			s.log.Info("partner codes imported", "campaign", campaign, "sku", sku, "received", res.Received,
				"new", res.New, "added", res.Added, "left", res.Left)
			s.writeValue(ctx, fasthttp.StatusOK, res)
			return true
		})
	case ctx.IsGet() || ctx.IsHead():
		c, cancel := opContext()
		defer cancel()
		pc, err := s.cat.Pool(c, campaign, sku)
		if err != nil {
			s.writeErr(ctx, err)
			return
		}
		s.writeValue(ctx, fasthttp.StatusOK, struct {
			CampaignID string `json:"campaign_id"`
			SKU        string `json:"sku"`
			*catalog.PoolCounts
		}{campaign, sku, pc})
	default:
		s.notAllowed(ctx, "GET, HEAD, PUT")
	}
}
