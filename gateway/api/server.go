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
	"github.com/flashgate/flashgate/scripts"
)

// Voucher is a claim as GET /v1/claims/{id} reports it.
type Voucher struct {
	ClaimID, CampaignID, SKU, UserID, State string
	Value                                   int64
	ClaimedAt, ExpiresAt                    time.Time
	RedeemedAt, ExpiredAt                   time.Time // zero when not set
}

// Redeem results.
const (
	RedeemOK = iota
	RedeemUnknown
	RedeemNotOwner
	RedeemExpired
)

// Vouchers reads and writes settled claims (Postgres). Defined here, where it is used,
// so this package does not import the database driver.
type Vouchers interface {
	Voucher(ctx context.Context, claimID string) (Voucher, bool, error)
	Redeem(ctx context.Context, claimID, userID string) (Voucher, int, error)
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
}

// Server is the public claim API.
type Server struct {
	cfg      Config
	claims   *claimer.Claimer
	vouchers Vouchers
	pending  Pending
	metrics  *Metrics
	log      *slog.Logger
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
}

var statePool = sync.Pool{New: func() any { return &reqState{out: make([]byte, 0, 512)} }}

var (
	pathClaims       = []byte("/v1/claims")
	pathClaimsPrefix = []byte("/v1/claims/")
	suffixRedeem     = []byte("/redeem")
	hdrIdempotency   = []byte("Idempotency-Key")
	hdrXFF           = []byte("X-Forwarded-For")
)

// Handler routes the public API.
func (s *Server) Handler(ctx *fasthttp.RequestCtx) {
	path := ctx.Path()
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
	default:
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

	if status, msg := s.decode(ctx, st); status != 0 {
		s.metrics.invalid.Inc()
		st.out = writeInvalid(ctx, st.out, status, msg)
		s.metrics.observeClaim(ctx.Time(), codeInvalid, nil)
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
	case r.Code == scripts.CodeAccepted:
		if r.Replayed {
			ctx.Response.Header.SetBytesKV(hdrReplayed, valTrue)
		}
		st.out = appendAccepted(st.out, r.ClaimID, r.CampaignID, r.SKU, r.UserID, r.Value, r.ExpiresAtMs)
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

func (s *Server) get(ctx *fasthttp.RequestCtx, id []byte) {
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
			v := Voucher{ClaimID: claimID, CampaignID: r.CampaignID, SKU: r.SKU, UserID: r.UserID,
				State: "pending", Value: o.Value, ClaimedAt: time.UnixMilli(o.ClaimedAtMs).UTC(),
				ExpiresAt: time.UnixMilli(o.ExpiresAtMs).UTC()}
			writeJSON(ctx, fasthttp.StatusOK, appendVoucher(nil, &v))
			return
		}
	}
	writeJSON(ctx, fasthttp.StatusNotFound, bodyNoSuchClaim)
}

func (s *Server) redeem(ctx *fasthttp.RequestCtx, id []byte) {
	if !validClaimID(id) {
		writeJSON(ctx, fasthttp.StatusNotFound, bodyNoSuchClaim)
		return
	}
	ct := ctx.Request.Header.ContentType()
	if i := bytes.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	if !bytes.EqualFold(bytes.TrimSpace(ct), jsonType) {
		writeInvalid(ctx, nil, fasthttp.StatusUnsupportedMediaType, "Content-Type must be application/json")
		return
	}
	user, msg := parseRedeem(ctx.Request.Body())
	if msg != "" {
		writeInvalid(ctx, nil, fasthttp.StatusBadRequest, msg)
		return
	}
	if s.vouchers == nil {
		writeJSON(ctx, answerUnavailable.status, answerUnavailable.body)
		return
	}
	lctx, cancel := context.WithTimeout(context.Background(), s.cfg.LookupTimeout)
	defer cancel()
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
		writeJSON(ctx, fasthttp.StatusForbidden, bodyNotOwner)
	case RedeemExpired:
		writeJSON(ctx, fasthttp.StatusConflict, bodyExpired)
	default:
		// Not in Postgres: pending (accepted, settling) or unknown.
		if s.pending != nil {
			if _, _, ok, err := s.pending.Pending(lctx, claimID); err == nil && ok {
				ctx.Response.Header.SetBytesKV(hdrRetryAfter, valOne)
				writeJSON(ctx, fasthttp.StatusConflict, bodyNotSettled)
				return
			}
		}
		writeJSON(ctx, fasthttp.StatusNotFound, bodyNoSuchClaim)
	}
}

func parseRedeem(body []byte) (string, string) {
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
