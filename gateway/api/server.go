// Package api owns the gateway's public HTTP API (CONTRACT.md "Public claim API"): it
// parses and validates claim requests, resolves the client IP, hands claims to the
// claimer and turns outcomes into status codes and bodies through one table. It runs on
// fasthttp and keeps the claim handler free of fmt and reflection-based JSON.
package api

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"
	"unsafe"

	"github.com/valyala/fasthttp"

	"github.com/flashgate/flashgate/gateway/claimer"
	"github.com/flashgate/flashgate/internal/claim"
	"github.com/flashgate/flashgate/internal/voucher"
)

// Voucher is a claim as GET /v1/claims/{id} reports it (internal/voucher, which the
// adapters in gateway/vouchers share without importing this package).
type Voucher = voucher.Voucher

// Redeem results.
const (
	RedeemOK       = voucher.RedeemOK
	RedeemUnknown  = voucher.RedeemUnknown
	RedeemNotOwner = voucher.RedeemNotOwner
	RedeemExpired  = voucher.RedeemExpired
	RedeemRevoked  = voucher.RedeemRevoked // voided by the risk team (riskctl revoke)
)

// Vouchers reads and writes settled claims (Postgres). Defined here, where it is used,
// so this package does not import the database driver.
type Vouchers interface {
	Voucher(ctx context.Context, claimID string) (Voucher, bool, error)
	Redeem(ctx context.Context, claimID, userID string) (Voucher, int, error)
	// Mine lists a user's settled vouchers, newest first, older than the cursor (the
	// zero cursor: from the newest), at most limit.
	Mine(ctx context.Context, userID string, before Cursor, limit int) ([]Voucher, error)
}

// Draw is a lottery draw that won nothing, as GET /v1/claims/{draw_id} reports it
// (internal/voucher).
type Draw = voucher.Draw

// Draws reads lottery draws that won nothing (DESIGN.md "Lottery"): such a draw is no
// claim - no claims row, no inflight entry - so neither Vouchers nor Pending knows its
// id. Defined here, where it is used (gateway/vouchers implements it on Redis and
// Postgres).
type Draws interface {
	// NoPrizeDraw reports the no-prize draw drawID: in flight (Redis) or settled (the
	// draws table). false when no such draw exists; an error when it cannot tell.
	NoPrizeDraw(ctx context.Context, drawID string) (Draw, bool, error)
}

// Blocker answers whether a user is blocked or frozen by the risk team (Redis).
type Blocker interface {
	Blocked(ctx context.Context, userID string) (bool, error)
}

// Pending answers for claims accepted but not yet in Postgres (Redis).
type Pending interface {
	Pending(ctx context.Context, claimID string) (claimer.Outcome, claimer.Request, bool, error)
}

// Config configures the public API.
type Config struct {
	// TrustedProxies are the peers whose X-Forwarded-For is believed.
	TrustedProxies []netip.Prefix
	// LookupTimeout bounds a GET or redeem's database call.
	LookupTimeout time.Duration
	// Auth verifies end-user tokens (auth.go). Nil: the user named in the request is
	// believed (a loopback dev gateway, or FLASH_TRUST_BODY_USER behind a proxy).
	Auth *Auth
	// Blocker, when set, refuses redeems by blocked or frozen users (403 blocked).
	Blocker Blocker
	// Draws, when set, lets GET /v1/claims/{id} answer a lottery draw that won nothing
	// to its owner (200 {"result":"no_prize","draw_id",...,"state"}); without it such
	// an id is 404 like an unknown one.
	Draws Draws
	// PendingMine, when set, adds a user's accepted-but-unsettled claims to
	// GET /v1/me/claims.
	PendingMine PendingMine
	// Points, when set, serves the points mall's public routes (gateway/points):
	// POST /v1/points/grants and GET /v1/me/points. It gets the reader that answers who
	// a GET is for (the token's user) and returns false for a path not its own.
	Points func(ctx *fasthttp.RequestCtx, path []byte, reader func(*fasthttp.RequestCtx) (string, bool)) bool
}

// Server is the public claim API.
type Server struct {
	cfg      Config
	claims   *claimer.Claimer
	vouchers Vouchers
	pending  Pending
	metrics  *Metrics
	log      *slog.Logger
	partners Partners // nil: no partner registry (partner.go)
}

// New builds the API. vouchers and pending may be nil in tests that only claim.
func New(cfg Config, c *claimer.Claimer, v Vouchers, p Pending, m *Metrics, log *slog.Logger) (*Server, error) {
	if c == nil {
		return nil, errors.New("api: a claimer is required")
	}
	if cfg.LookupTimeout == 0 {
		cfg.LookupTimeout = 2 * time.Second
	}
	if m == nil {
		m = NewMetrics(nil)
	}
	return &Server{cfg: cfg, claims: c, vouchers: v, pending: p, metrics: m, log: log}, nil
}

type reqState struct {
	body claimBody
	req  claimer.Request
	out  []byte
	ip   []byte // the client IP's text; req.IP views it
	sub  []byte // the verified user (auth.go), nil without user tokens
}

var statePool = sync.Pool{New: func() any { return &reqState{out: make([]byte, 0, 512)} }}

var (
	pathClaims       = []byte("/v1/claims")
	pathClaimsPrefix = []byte("/v1/claims/")
	pathMeClaims     = []byte("/v1/me/claims")
	suffixRedeem     = []byte("/redeem")
	hdrIdempotency   = []byte("Idempotency-Key")
	hdrXFF           = []byte("X-Forwarded-For")
)

// Handler routes the public API.
func (s *Server) Handler(ctx *fasthttp.RequestCtx) {
	path := ctx.Path()
	if s.partnerRoute(ctx, path) {
		return
	}
	switch {
	case bytes.Equal(path, pathClaims):
		if !ctx.IsPost() {
			ctx.Response.Header.Set("Allow", "POST")
			writeJSON(ctx, fasthttp.StatusMethodNotAllowed, bodyMethod)
			return
		}
		s.claim(ctx)
	case bytes.HasPrefix(path, pathClaimsPrefix):
		rest := path[len(pathClaimsPrefix):]
		if s.lifeRoute(ctx, rest) { // rollback, transfer (life.go)
			return
		}
		if bytes.HasSuffix(rest, suffixRedeem) {
			defer s.metrics.observeRoute(ctx, RouteRedeem)
			if !ctx.IsPost() {
				ctx.Response.Header.Set("Allow", "POST")
				writeJSON(ctx, fasthttp.StatusMethodNotAllowed, bodyMethod)
				return
			}
			s.redeem(ctx, rest[:len(rest)-len(suffixRedeem)])
			return
		}
		defer s.metrics.observeRoute(ctx, RouteGet)
		if !ctx.IsGet() {
			ctx.Response.Header.Set("Allow", "GET")
			writeJSON(ctx, fasthttp.StatusMethodNotAllowed, bodyMethod)
			return
		}
		s.get(ctx, rest)
	case bytes.HasPrefix(path, pathCampaignsPrefix) && bytes.HasSuffix(path, suffixOdds):
		defer s.metrics.observeRoute(ctx, RouteOther)
		if !ctx.IsGet() {
			ctx.Response.Header.Set("Allow", "GET")
			writeJSON(ctx, fasthttp.StatusMethodNotAllowed, bodyMethod)
			return
		}
		s.odds(ctx, path[len(pathCampaignsPrefix):len(path)-len(suffixOdds)]) // lottery.go
	case bytes.Equal(path, pathMeClaims):
		if !ctx.IsGet() {
			ctx.Response.Header.Set("Allow", "GET")
			writeJSON(ctx, fasthttp.StatusMethodNotAllowed, bodyMethod)
			return
		}
		s.mine(ctx)
	default:
		if s.cfg.Points != nil && s.cfg.Points(ctx, path, s.reader) {
			s.metrics.observeRoute(ctx, RouteOther)
			return
		}
		writeJSON(ctx, fasthttp.StatusNotFound, bodyNotFound)
		s.metrics.observeRoute(ctx, RouteOther)
	}
}

// ErrorHandler answers requests fasthttp refused before a handler ran (a body over the
// server's limit, a malformed request line) with the API's JSON error shape.
func ErrorHandler(ctx *fasthttp.RequestCtx, err error) {
	var small *fasthttp.ErrSmallBuffer
	var netErr net.Error
	switch {
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		writeInvalid(ctx, nil, fasthttp.StatusRequestEntityTooLarge, "body larger than 4096 bytes")
	case errors.As(err, &small):
		// The request line and headers did not fit the server's read buffer.
		writeInvalid(ctx, nil, fasthttp.StatusRequestHeaderFieldsTooLarge, "request headers too large")
	case errors.As(err, &netErr) && netErr.Timeout():
		writeInvalid(ctx, nil, fasthttp.StatusRequestTimeout, "request not received in time")
	default:
		writeInvalid(ctx, nil, fasthttp.StatusBadRequest, "malformed HTTP request")
	}
}

// str views b as a string without copying. Only for values that die before the handler
// returns; anything kept (cache keys, records) is copied by its keeper.
func str(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

func (s *Server) claim(ctx *fasthttp.RequestCtx) {
	st := statePool.Get().(*reqState)
	defer statePool.Put(st)
	st.out = st.out[:0]

	sub, ok := s.caller(ctx)
	if !ok {
		return
	}
	st.sub = sub
	if status, msg := s.decode(ctx, st); status != 0 {
		s.metrics.invalid.Inc()
		st.out = writeInvalid(ctx, st.out, status, msg)
		s.metrics.observeClaim(ctx.Time(), codeInvalid, nil)
		return
	}
	if sub != nil && st.req.UserID != str(sub) {
		s.mismatch(ctx)
		return
	}
	if s.partners != nil && s.partners.IsPartner(userPrefix(st.body.UserID)) {
		s.metrics.invalid.Inc()
		st.out = writeInvalid(ctx, st.out, fasthttp.StatusBadRequest, msgPartnerUser)
		return
	}
	s.respond(ctx, st, s.claims.Do(context.Background(), &st.req))
}

// respond writes the answer to a decoded claim from its outcome (or the claimer's
// error). It allocates nothing in steady state (alloc_test.go).
func (s *Server) respond(ctx *fasthttp.RequestCtx, st *reqState, err error) {
	r := &st.req
	if err != nil {
		s.metrics.unavailable.Inc()
		ctx.Response.Header.SetBytesKV(hdrRetryAfter, valOne)
		writeJSON(ctx, answerUnavailable.status, answerUnavailable.body)
		s.metrics.observeClaim(ctx.Time(), codeUnavailable, st.body.CampaignID)
		return
	}
	a, ok := answers[r.Code]
	if !ok {
		s.log.Error("claim script returned an unknown code", "code", r.Code)
		writeJSON(ctx, answerUnavailable.status, answerUnavailable.body)
		s.metrics.observeClaim(ctx.Time(), codeUnavailable, st.body.CampaignID)
		return
	}
	// Timed once the answer is in the response: the script and the produce included.
	defer s.metrics.observeClaim(ctx.Time(), r.Code, st.body.CampaignID)
	s.metrics.outcome(r.Code).Inc()
	switch {
	case r.Code == claim.CodeAccepted:
		if r.Replayed {
			ctx.Response.Header.SetBytesKV(hdrReplayed, valTrue)
		}
		prefix := acceptedPrefix
		if r.Lottery {
			prefix = wonPrefix
		}
		st.out = appendClaimBody(st.out, prefix, r.ClaimID, r.CampaignID, r.SKU, r.UserID, r.Value, r.ExpiresAtMs)
		writeJSON(ctx, fasthttp.StatusOK, st.out)
	case r.Code == claim.CodeNoPrize:
		if r.Replayed {
			ctx.Response.Header.SetBytesKV(hdrReplayed, valTrue)
		}
		st.out = appendNoPrize(st.out, r.ClaimID, r.CampaignID, r.UserID)
		writeJSON(ctx, fasthttp.StatusOK, st.out)
	case a.status == fasthttp.StatusTooManyRequests:
		secs := (r.RetryAfterMs + 999) / 1000
		if secs < 1 {
			secs = 1
		}
		ctx.Response.Header.SetBytesKV(hdrRetryAfter, strconv.AppendInt(st.out[:0], secs, 10))
		st.out = appendVelocity(st.out[:0], a.reason, r.RetryAfterMs)
		writeJSON(ctx, a.status, st.out)
	default:
		if r.Replayed {
			ctx.Response.Header.SetBytesKV(hdrReplayed, valTrue)
		}
		writeJSON(ctx, a.status, a.body)
	}
}

// decode validates the request into st.req. It returns 0 or a 4xx status and message.
func (s *Server) decode(ctx *fasthttp.RequestCtx, st *reqState) (int, string) {
	ct := ctx.Request.Header.ContentType()
	if i := bytes.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	if !bytes.EqualFold(bytes.TrimSpace(ct), jsonType) {
		return fasthttp.StatusUnsupportedMediaType, "Content-Type must be application/json"
	}
	body := ctx.Request.Body()
	if len(body) > MaxBodyBytes {
		return fasthttp.StatusRequestEntityTooLarge, "body larger than 4096 bytes"
	}
	b := &st.body
	if err := b.parse(body); err != nil {
		return fasthttp.StatusBadRequest, err.Error()
	}
	if b.UserID == nil && st.sub != nil {
		b.UserID = st.sub // with a token the body need not repeat the user
	}
	hdrKey := ctx.Request.Header.PeekBytes(hdrIdempotency)
	switch {
	case b.seen&fRequest == 0 && len(hdrKey) > 0:
		b.RequestID = hdrKey
	case b.seen&fRequest != 0 && len(hdrKey) > 0 && !bytes.Equal(hdrKey, b.RequestID):
		return fasthttp.StatusBadRequest, "request_id: differs from the Idempotency-Key header"
	}
	// The messages are constants: a refused request allocates nothing (alloc_test.go).
	const idRule = ": must be 1-64 characters of [A-Za-z0-9._:-]"
	for _, f := range [...]struct {
		v                 []byte
		required, invalid string
	}{
		{b.CampaignID, "campaign_id: required", "campaign_id" + idRule},
		{b.SKU, "sku: required", "sku" + idRule},
		{b.UserID, "user_id: required", "user_id" + idRule},
		{b.DeviceID, "device_id: required", "device_id" + idRule},
		{b.RequestID, "request_id: required (in the body or the Idempotency-Key header)", "request_id" + idRule},
	} {
		if f.v == nil {
			return fasthttp.StatusBadRequest, f.required
		}
		if !validID(f.v) {
			return fasthttp.StatusBadRequest, f.invalid
		}
	}
	ip, ok := s.clientIP(ctx, st.ip[:0])
	st.ip = ip
	if !ok {
		return fasthttp.StatusBadRequest, "X-Forwarded-For: not a list of IP addresses"
	}
	st.req = claimer.Request{
		RequestID:  str(b.RequestID),
		CampaignID: str(b.CampaignID),
		SKU:        str(b.SKU),
		UserID:     str(b.UserID),
		DeviceID:   str(b.DeviceID),
		IP:         str(ip),
	}
	return 0, ""
}

// clientIP appends to buf the TCP peer, or, when the peer is a trusted proxy, the
// right-most X-Forwarded-For hop that is not itself a trusted proxy. A hop that does not
// parse ends the walk: everything left of it is the client's to forge. It appends
// rather than returning a string so the claim path does not allocate per request.
func (s *Server) clientIP(ctx *fasthttp.RequestCtx, buf []byte) ([]byte, bool) {
	peer, _ := netip.AddrFromSlice(ctx.RemoteIP())
	peer = peer.Unmap()
	if len(s.cfg.TrustedProxies) == 0 || !s.trusted(peer) {
		return peer.AppendTo(buf), true
	}
	client := peer
	values := ctx.Request.Header.PeekAll(string(hdrXFF))
	for v := len(values) - 1; v >= 0; v-- {
		list := values[v]
		for len(list) > 0 {
			i := bytes.LastIndexByte(list, ',')
			hop := bytes.TrimSpace(list[i+1:])
			if i < 0 {
				list = nil
			} else {
				list = list[:i]
			}
			if len(hop) == 0 {
				continue
			}
			addr, err := netip.ParseAddr(str(hop))
			if err != nil {
				return buf, false
			}
			client = addr.Unmap()
			if !s.trusted(client) {
				return client.AppendTo(buf), true
			}
		}
	}
	return client.AppendTo(buf), true
}

func (s *Server) trusted(a netip.Addr) bool {
	for _, p := range s.cfg.TrustedProxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// reader answers who a GET is for: the token's user, or, without user tokens, the
// user_id query parameter (required: a voucher is shown to its owner alone).
func (s *Server) reader(ctx *fasthttp.RequestCtx) (string, bool) {
	sub, ok := s.caller(ctx)
	if !ok {
		return "", false
	}
	q := ctx.QueryArgs().Peek("user_id")
	switch {
	case sub != nil && len(q) > 0 && !bytes.Equal(q, sub):
		s.mismatch(ctx)
		return "", false
	case sub != nil:
		return string(sub), true
	case len(q) == 0:
		writeInvalid(ctx, nil, fasthttp.StatusBadRequest, "user_id: required (a query parameter when the gateway has no user tokens)")
		return "", false
	case !validID(q):
		writeInvalid(ctx, nil, fasthttp.StatusBadRequest, "user_id: must be 1-64 characters of [A-Za-z0-9._:-]")
		return "", false
	}
	return string(q), true
}

// get answers GET /v1/claims/{id} for the voucher's owner. Anyone else hears exactly
// what an id that never existed gets (CONTRACT.md "Owner only"): the same status,
// body and headers, so a claim id learned from someone else says nothing. The id may
// also be a lottery's draw_id: a won draw is a claim (its row, or pending, with its
// delivery state); one that won nothing is answered from Draws, in the no-prize body
// of POST /v1/claims plus its state and drawn_at (DESIGN.md "Lottery").
func (s *Server) get(ctx *fasthttp.RequestCtx, id []byte) {
	user, ok := s.reader(ctx)
	if !ok {
		return
	}
	if !validClaimID(id) {
		writeJSON(ctx, fasthttp.StatusNotFound, bodyNoSuchClaim)
		return
	}
	claimID := string(id)
	lctx, cancel := context.WithTimeout(context.Background(), s.cfg.LookupTimeout)
	defer cancel()
	if s.vouchers != nil {
		v, ok, err := s.vouchers.Voucher(lctx, claimID)
		if err != nil {
			s.log.Warn("claim lookup failed", "err", err)
			writeJSON(ctx, answerUnavailable.status, answerUnavailable.body)
			return
		}
		if ok {
			if v.UserID != user {
				writeJSON(ctx, fasthttp.StatusNotFound, bodyNoSuchClaim)
				return
			}
			writeJSON(ctx, fasthttp.StatusOK, appendVoucher(nil, &v))
			return
		}
	}
	if s.pending != nil {
		o, r, ok, err := s.pending.Pending(lctx, claimID)
		if err != nil {
			writeJSON(ctx, answerUnavailable.status, answerUnavailable.body)
			return
		}
		if ok {
			if r.UserID != user {
				writeJSON(ctx, fasthttp.StatusNotFound, bodyNoSuchClaim)
				return
			}
			v := pendingVoucher(claimID, o, r)
			writeJSON(ctx, fasthttp.StatusOK, appendVoucher(nil, &v))
			return
		}
	}
	if s.cfg.Draws != nil {
		d, ok, err := s.cfg.Draws.NoPrizeDraw(lctx, claimID)
		if err != nil {
			s.log.Warn("draw lookup failed", "err", err)
			ctx.Response.Header.SetBytesKV(hdrRetryAfter, valOne)
			writeJSON(ctx, answerUnavailable.status, answerUnavailable.body)
			return
		}
		if ok && d.UserID == user {
			writeJSON(ctx, fasthttp.StatusOK, appendDraw(nil, &d))
			return
		}
	}
	writeJSON(ctx, fasthttp.StatusNotFound, bodyNoSuchClaim)
}

func pendingVoucher(claimID string, o claimer.Outcome, r claimer.Request) Voucher {
	return Voucher{ClaimID: claimID, CampaignID: r.CampaignID, SKU: r.SKU, UserID: r.UserID,
		State: "pending", Value: o.Value, ClaimedAt: time.UnixMilli(o.ClaimedAtMs).UTC(),
		ExpiresAt: time.UnixMilli(o.ExpiresAtMs).UTC()}
}

func (s *Server) redeem(ctx *fasthttp.RequestCtx, id []byte) {
	sub, ok := s.caller(ctx)
	if !ok {
		return
	}
	if !validClaimID(id) {
		writeJSON(ctx, fasthttp.StatusNotFound, bodyNoSuchClaim)
		return
	}
	body := ctx.Request.Body()
	if bytes.Contains(body, keyOrderID) {
		s.redeemOrder(ctx, id) // against an order (life.go)
		return
	}
	var user string
	if sub != nil && len(bytes.TrimSpace(body)) == 0 {
		user = string(sub) // with a token, redeem needs no body
	} else {
		ct := ctx.Request.Header.ContentType()
		if i := bytes.IndexByte(ct, ';'); i >= 0 {
			ct = ct[:i]
		}
		if !bytes.EqualFold(bytes.TrimSpace(ct), jsonType) {
			writeInvalid(ctx, nil, fasthttp.StatusUnsupportedMediaType, "Content-Type must be application/json")
			return
		}
		var msg string
		user, msg = parseRedeem(body, sub != nil)
		if msg != "" {
			writeInvalid(ctx, nil, fasthttp.StatusBadRequest, msg)
			return
		}
		switch {
		case user == "" && sub != nil:
			user = string(sub)
		case sub != nil && user != string(sub):
			s.mismatch(ctx)
			return
		}
	}
	if s.vouchers == nil {
		writeJSON(ctx, answerUnavailable.status, answerUnavailable.body)
		return
	}
	lctx, cancel := context.WithTimeout(context.Background(), s.cfg.LookupTimeout)
	defer cancel()
	if s.cfg.Blocker != nil {
		// A blocked or frozen user redeems nothing (CONTRACT.md; docs/SECURITY.md). Told
		// before the voucher is looked up, so it says nothing about the id.
		blocked, err := s.cfg.Blocker.Blocked(lctx, user)
		if err != nil {
			s.log.Warn("redeem: block check failed", "err", err)
			writeJSON(ctx, answerUnavailable.status, answerUnavailable.body)
			return
		}
		if blocked {
			writeJSON(ctx, fasthttp.StatusForbidden, answers[claim.CodeBlocked].body)
			return
		}
	}
	claimID := string(id)
	v, res, err := s.vouchers.Redeem(lctx, claimID, user)
	if err != nil {
		s.log.Warn("redeem failed", "err", err)
		writeJSON(ctx, answerUnavailable.status, answerUnavailable.body)
		return
	}
	switch res {
	case RedeemOK:
		writeJSON(ctx, fasthttp.StatusOK, appendVoucher(nil, &v))
	case RedeemNotOwner:
		// Exactly the unknown id's answer: whose voucher it is is not the caller's to learn.
		writeJSON(ctx, fasthttp.StatusNotFound, bodyNoSuchClaim)
	case RedeemExpired:
		writeJSON(ctx, fasthttp.StatusConflict, bodyExpired)
	case RedeemRevoked:
		writeJSON(ctx, fasthttp.StatusConflict, bodyRevoked)
	default:
		// Not in Postgres: pending (accepted, settling) or unknown.
		if s.pending != nil {
			if _, r, ok, err := s.pending.Pending(lctx, claimID); err == nil && ok && r.UserID == user {
				ctx.Response.Header.SetBytesKV(hdrRetryAfter, valOne)
				writeJSON(ctx, fasthttp.StatusConflict, bodyNotSettled)
				return
			}
		}
		writeJSON(ctx, fasthttp.StatusNotFound, bodyNoSuchClaim)
	}
}

// parseRedeem reads a redeem body: {"user_id":...}, or, with a token, {} too.
func parseRedeem(body []byte, optional bool) (string, string) {
	if len(body) > MaxBodyBytes {
		return "", "body larger than 4096 bytes"
	}
	var b claimBody
	if err := b.parse(body); err != nil {
		return "", err.Error()
	}
	if b.seen&^fUser != 0 {
		return "", "only user_id is accepted when redeeming"
	}
	if b.UserID == nil {
		if optional {
			return "", ""
		}
		return "", "user_id: required"
	}
	if !validID(b.UserID) {
		return "", "user_id: must be 1-64 characters of [A-Za-z0-9._:-]"
	}
	return string(b.UserID), ""
}

// validClaimID: "<campaign>.<26 base32 chars>".
func validClaimID(id []byte) bool {
	camp := claimer.CampaignOfClaim(str(id))
	return camp != "" && validID([]byte(camp)) && validID(id[len(camp)+1:])
}

func appendVoucher(buf []byte, v *Voucher) []byte {
	buf = append(buf, `{"claim_id":`...)
	buf = appendStr(buf, v.ClaimID)
	buf = append(buf, `,"state":`...)
	buf = appendStr(buf, v.State)
	buf = append(buf, `,"campaign_id":`...)
	buf = appendStr(buf, v.CampaignID)
	buf = append(buf, `,"sku":`...)
	buf = appendStr(buf, v.SKU)
	buf = append(buf, `,"user_id":`...)
	buf = appendStr(buf, v.UserID)
	buf = append(buf, `,"value":`...)
	buf = strconv.AppendInt(buf, v.Value, 10)
	buf = appendTime(buf, "claimed_at", v.ClaimedAt)
	buf = appendTime(buf, "expires_at", v.ExpiresAt)
	buf = appendTime(buf, "redeemed_at", v.RedeemedAt)
	buf = appendTime(buf, "expired_at", v.ExpiredAt)
	if v.Delivery != "" {
		buf = append(buf, `,"delivery":`...)
		buf = appendStr(buf, v.Delivery)
	}
	if v.Code != "" {
		// The partner code: every caller of appendVoucher answers the voucher's owner
		// (GET /v1/claims/{id}, /v1/me/claims, redeem, rollback); transfer clears it.
		buf = append(buf, `,"code":`...)
		buf = appendStr(buf, v.Code)
	}
	return append(buf, '}')
}

func appendTime(buf []byte, name string, t time.Time) []byte {
	if t.IsZero() {
		return buf
	}
	buf = append(buf, ',', '"')
	buf = append(buf, name...)
	buf = append(buf, `":"`...)
	buf = t.UTC().AppendFormat(buf, expiresAtLayout)
	return append(buf, '"')
}
