package admin

import (
	"github.com/valyala/fasthttp"

	"github.com/flashgate/flashgate/internal/catalog"
	"github.com/flashgate/flashgate/internal/fielderr"
)

// partners routes /admin/v1/partners[/{id}] (CONTRACT.md "Partners"): GET lists the
// partners, GET /{id} shows one, PUT /{id} registers or updates one. No answer but the
// PUT that issued it ever carries a key.
func (s *Server) partners(ctx *fasthttp.RequestCtx, parts []string) {
	switch {
	case len(parts) == 0 || (len(parts) == 1 && parts[0] == ""):
		if s.method(ctx, "GET") {
			c, cancel := opContext()
			defer cancel()
			ps, err := s.cat.Partners(c)
			if err != nil {
				s.writeErr(ctx, err)
				return
			}
			s.writeValue(ctx, fasthttp.StatusOK, map[string]any{"partners": ps})
		}
	case len(parts) == 1:
		switch {
		case ctx.IsPut():
			s.putPartner(ctx, parts[0])
		case ctx.IsGet() || ctx.IsHead():
			c, cancel := opContext()
			defer cancel()
			p, err := s.cat.Partner(c, parts[0])
			if err != nil {
				s.writeErr(ctx, err)
				return
			}
			s.writeValue(ctx, fasthttp.StatusOK, p)
		default:
			s.notAllowed(ctx, "GET, HEAD, PUT")
		}
	default:
		writeJSON(ctx, fasthttp.StatusNotFound, bodyNotFound)
	}
}

func (s *Server) putPartner(ctx *fasthttp.RequestCtx, id string) {
	var body catalog.PartnerPut
	if err := fielderr.DecodeStrict(ctx.Request.Body(), &body); err != nil {
		s.writeErr(ctx, err)
		return
	}
	c, cancel := opContext()
	defer cancel()
	res, err := s.cat.PutPartner(c, id, &body)
	if err != nil {
		s.writeErr(ctx, err)
		return
	}
	// TODO(audit): record the change with the acting admin's name once the admin audit
	// (issue 14, admin bullet) has its writer; the key itself is never logged or audited.
	s.log.Info("partner set", "partner", id, "created", res.Created, "key_issued", res.Key != "",
		"quotas", len(res.Quotas), "warmed", res.Warmed)
	// The key is shown once: nothing between here and the caller may keep the answer.
	ctx.Response.Header.Set("Cache-Control", "no-store")
	s.writeValue(ctx, fasthttp.StatusOK, res)
}
