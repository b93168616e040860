package admin

import (
	"bytes"
	"fmt"
	"strconv"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/flashgate/flashgate/internal/catalog"
)

// review answers GET /admin/v1/campaigns/{id}/report?table=review[&format=csv]: the
// per-tier and per-channel review (catalog.Review).
func (s *Server) review(ctx *fasthttp.RequestCtx, id string) {
	format := string(ctx.QueryArgs().Peek("format"))
	if format != "" && format != "csv" && format != "json" {
		s.writeErr(ctx, &catalog.FieldError{Field: "format", Msg: "want csv or json"})
		return
	}
	asCSV := format == "csv" || (format == "" && bytes.Contains(ctx.Request.Header.Peek("Accept"), csvType))
	c, cancel := opContext()
	defer cancel()
	rows, err := s.cat.Review(c, id)
	if err != nil {
		s.writeErr(ctx, err)
		return
	}
	if !asCSV {
		s.writeValue(ctx, fasthttp.StatusOK, map[string]any{"campaign_id": id, "review": rows})
		return
	}
	var buf bytes.Buffer
	if err := catalog.WriteReviewCSV(&buf, rows); err != nil {
		s.writeErr(ctx, fmt.Errorf("review %s as CSV: %w", id, err))
		return
	}
	ctx.SetStatusCode(fasthttp.StatusOK)
	ctx.SetContentType("text/csv; charset=utf-8")
	ctx.Response.Header.Set("Content-Disposition", `attachment; filename="`+id+`-review.csv"`)
	ctx.SetBody(buf.Bytes())
}

// expiring answers GET /admin/v1/campaigns/{id}/expiring?within=48h[&limit=N][&after=C]:
// the holders to remind, paged (catalog.Expiring; within at most 31 days, limit 1..1000,
// default 100).
func (s *Server) expiring(ctx *fasthttp.RequestCtx, id string) {
	q := ctx.QueryArgs()
	within, err := time.ParseDuration(string(q.Peek("within")))
	if err != nil {
		s.writeErr(ctx, &catalog.FieldError{Field: "within", Msg: "required, a duration like 48h"})
		return
	}
	limit := 100
	if v := q.Peek("limit"); v != nil {
		if limit, err = strconv.Atoi(string(v)); err != nil {
			s.writeErr(ctx, &catalog.FieldError{Field: "limit", Msg: "must be an integer"})
			return
		}
	}
	c, cancel := opContext()
	defer cancel()
	p, err := s.cat.Expiring(c, id, within, string(q.Peek("after")), limit)
	if err != nil {
		s.writeErr(ctx, err)
		return
	}
	s.writeValue(ctx, fasthttp.StatusOK, p)
}
