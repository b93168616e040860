package api

import (
	"bytes"
	"context"

	"github.com/valyala/fasthttp"
)

// Partner claims (CONTRACT.md "Partners", DESIGN.md "Partners"). A partner back end
// sends POST /v1/claims with X-Partner-Key for one of its own users: the claim is made
// for "<partner>:<user_id>" on the channel "partner:<id>" and counts against the
// partner's quota in the campaign in the claim script's atomic step. A partner key is
// accepted nowhere else: it never reads or redeems a voucher (that is the end user's)
// and the admin API accepts admin tokens only.

// Partners resolves X-Partner-Key (the gateway's catalog, from its in-memory index).
// Defined here so this package does not import the catalog (and the database driver).
type Partners interface {
	// PartnerByKey returns the partner's id and channel ("partner:<id>").
	PartnerByKey(key []byte) (id, channel string, ok bool)
	// IsPartner reports whether id is a registered partner's.
	IsPartner(id []byte) bool
}

// SetPartners enables partner claims. Without it a request carrying X-Partner-Key is
// answered 401: it is never taken for an app user's claim.
func (s *Server) SetPartners(p Partners) { s.partners = p }

var (
	hdrPartnerKey     = []byte("X-Partner-Key")
	bodyUnauthPartner = []byte(`{"error":"unauthenticated","message":"X-Partner-Key: unknown key"}`)
	bodyPartnerOnly   = []byte(`{"error":"forbidden","message":"a partner key may only make claims (POST /v1/claims)"}`)
	msgPartnerUser    = "user_id: the part before ':' names a partner; that partner's users claim through it (X-Partner-Key)"
)

// userPrefix is the part of a user id before its first ':' (nil when it has none).
func userPrefix(user []byte) []byte {
	if i := bytes.IndexByte(user, ':'); i > 0 {
		return user[:i]
	}
	return nil
}

// partnerRoute handles every request that carries X-Partner-Key, and reports whether it
// did: POST /v1/claims is a partner claim, anything else is refused 403.
func (s *Server) partnerRoute(ctx *fasthttp.RequestCtx, path []byte) bool {
	key := ctx.Request.Header.PeekBytes(hdrPartnerKey)
	if len(key) == 0 {
		return false
	}
	if !bytes.Equal(path, pathClaims) || !ctx.IsPost() {
		writeJSON(ctx, fasthttp.StatusForbidden, bodyPartnerOnly)
		return true
	}
	if s.partners == nil {
		writeJSON(ctx, fasthttp.StatusUnauthorized, bodyUnauthPartner)
		return true
	}
	id, channel, ok := s.partners.PartnerByKey(bytes.TrimSpace(key))
	if !ok {
		ctx.Response.Header.Set("WWW-Authenticate", `X-Partner-Key realm="flashgate"`)
		writeJSON(ctx, fasthttp.StatusUnauthorized, bodyUnauthPartner)
		return true
	}
	s.partnerClaim(ctx, id, channel)
	return true
}

// partnerClaim is claim() for a partner: the same validation, then the user namespaced
// under the partner and the claim made on the partner's channel.
func (s *Server) partnerClaim(ctx *fasthttp.RequestCtx, partner, channel string) {
	st := statePool.Get().(*reqState)
	defer statePool.Put(st)
	st.out = st.out[:0]
	if status, msg := s.decode(ctx, st); status != 0 {
		s.metrics.invalid.Inc()
		st.out = writeInvalid(ctx, st.out, status, msg)
		return
	}
	if len(partner)+1+len(st.body.UserID) > MaxIDLen {
		s.metrics.invalid.Inc()
		st.out = writeInvalid(ctx, st.out, fasthttp.StatusBadRequest,
			"user_id: with the partner's prefix (\""+partner+":\") it must be at most 64 characters")
		return
	}
	// The user's id is the partner's, namespaced: a partner cannot claim as an app user
	// (or as another partner's user), and its users' per-user limit is their own.
	st.req.UserID = partner + ":" + st.req.UserID
	st.req.Channel = channel
	s.respond(ctx, st, s.claims.Do(context.Background(), &st.req))
}
