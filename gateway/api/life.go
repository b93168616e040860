package api

import (
	"bytes"
	"context"
	"encoding/json"
	"strconv"
	"strings"

	"github.com/valyala/fasthttp"

	"github.com/flashgate/flashgate/internal/claim"
	"github.com/flashgate/flashgate/internal/voucher"
)

// The voucher's life on the public API (CONTRACT.md "Issuance and the voucher's life"):
//
//	POST /v1/claims/{id}/redeem          {"order_id","amount","category"}  redeem against an order
//	POST /v1/claims/{id}/redeem/rollback {"order_id"}                      the order was refunded
//	POST /v1/claims/{id}/transfer        {"to_user_id"}                    give it to another user
//
// A redeem body without "order_id" is the original redeem (parseRedeem), kept as it was.
// These are not the claim hot path: their bodies are decoded with encoding/json.

// LifeVouchers is the Postgres side of these routes (gateway/vouchers.Store). Optional:
// a Vouchers that does not implement it answers 503 on them.
type LifeVouchers interface {
	RedeemOrder(ctx context.Context, claimID, userID string, o voucher.Order) (Voucher, int, error)
	Rollback(ctx context.Context, claimID, userID, orderID string) (Voucher, int, error)
	Transfer(ctx context.Context, claimID, fromUser, toUser string) (Voucher, int, error)
}

var (
	suffixRollback      = []byte("/redeem/rollback")
	suffixTransfer      = []byte("/transfer")
	bodyBelowMinSpend   = []byte(`{"result":"rejected","reason":"below_min_spend"}`)
	bodyNotApplicable   = []byte(`{"result":"rejected","reason":"not_applicable"}`)
	bodyOtherOrder      = []byte(`{"result":"rejected","reason":"already_redeemed"}`)
	bodyNoOrder         = []byte(`{"result":"rejected","reason":"not_redeemed_on_order"}`)
	bodyNotTransferable = []byte(`{"result":"rejected","reason":"not_transferable"}`)
	bodyNotUsable       = []byte(`{"result":"rejected","reason":"not_usable"}`)
	bodyTransferRate    = []byte(`{"result":"rejected","reason":"transfer_rate"}`)
	keyOrderID          = []byte(`"order_id"`)
)

// lifeRoute serves rollback and transfer; false when the path is neither.
func (s *Server) lifeRoute(ctx *fasthttp.RequestCtx, rest []byte) bool {
	var id []byte
	var do func(*fasthttp.RequestCtx, []byte)
	switch {
	case bytes.HasSuffix(rest, suffixRollback):
		id, do = rest[:len(rest)-len(suffixRollback)], s.rollback
	case bytes.HasSuffix(rest, suffixTransfer):
		id, do = rest[:len(rest)-len(suffixTransfer)], s.transfer
	default:
		return false
	}
	defer s.metrics.observeRoute(ctx, RouteRedeem)
	if !ctx.IsPost() {
		ctx.Response.Header.Set("Allow", "POST")
		writeJSON(ctx, fasthttp.StatusMethodNotAllowed, bodyMethod)
		return true
	}
	do(ctx, id)
	return true
}

type lifeBody struct {
	UserID   *string `json:"user_id"`
	OrderID  *string `json:"order_id"`
	Amount   *int64  `json:"amount"`
	Category *string `json:"category"`
	ToUserID *string `json:"to_user_id"`
}

// lifeRequest checks the caller, the id and the JSON body (only the fields in allowed);
// it answers and returns ok=false when any is wrong. user is the acting user.
func (s *Server) lifeRequest(ctx *fasthttp.RequestCtx, id []byte, allowed ...string) (user string, b lifeBody, ok bool) {
	sub, ok := s.caller(ctx)
	if !ok {
		return "", b, false
	}
	if !validClaimID(id) {
		writeJSON(ctx, fasthttp.StatusNotFound, bodyNoSuchClaim)
		return "", b, false
	}
	ct := ctx.Request.Header.ContentType()
	if i := bytes.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	if !bytes.EqualFold(bytes.TrimSpace(ct), jsonType) {
		writeInvalid(ctx, nil, fasthttp.StatusUnsupportedMediaType, "Content-Type must be application/json")
		return "", b, false
	}
	body := ctx.Request.Body()
	if len(body) > MaxBodyBytes {
		writeInvalid(ctx, nil, fasthttp.StatusRequestEntityTooLarge, "body larger than 4096 bytes")
		return "", b, false
	}
	if msg := decodeLife(body, &b, allowed); msg != "" {
		writeInvalid(ctx, nil, fasthttp.StatusBadRequest, msg)
		return "", b, false
	}
	switch {
	case b.UserID != nil && !validID([]byte(*b.UserID)):
		writeInvalid(ctx, nil, fasthttp.StatusBadRequest, "user_id: must be 1-64 characters of [A-Za-z0-9._:-]")
		return "", b, false
	case sub != nil && b.UserID != nil && *b.UserID != string(sub):
		s.mismatch(ctx)
		return "", b, false
	case sub != nil:
		user = string(sub)
	case b.UserID == nil:
		writeInvalid(ctx, nil, fasthttp.StatusBadRequest, "user_id: required")
		return "", b, false
	default:
		user = *b.UserID
	}
	if s.vouchers == nil {
		writeJSON(ctx, answerUnavailable.status, answerUnavailable.body)
		return "", b, false
	}
	return user, b, true
}

func decodeLife(body []byte, b *lifeBody, allowed []string) string {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(body, &raw); err != nil || raw == nil {
		return "body: must be a JSON object"
	}
	for k := range raw {
		if k != "user_id" && !contains(allowed, k) {
			return k + ": unknown field (accepted: user_id, " + strings.Join(allowed, ", ") + ")"
		}
	}
	if err := json.Unmarshal(body, b); err != nil {
		if te, ok := err.(*json.UnmarshalTypeError); ok {
			return te.Field + ": must be a " + te.Type.String()
		}
		return "body: not valid JSON"
	}
	return ""
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// MaxOrderAmount bounds an order's amount (in the currency's smallest unit).
const MaxOrderAmount = 1_000_000_000_000

func requiredID(p *string, field string) string {
	if p == nil {
		return field + ": required"
	}
	if !validID([]byte(*p)) {
		return field + ": must be 1-64 characters of [A-Za-z0-9._:-]"
	}
	return ""
}

// redeemOrder serves a redeem body that carries an order_id.
func (s *Server) redeemOrder(ctx *fasthttp.RequestCtx, id []byte) {
	user, b, ok := s.lifeRequest(ctx, id, "order_id", "amount", "category")
	if !ok {
		return
	}
	msg := requiredID(b.OrderID, "order_id")
	if msg == "" {
		msg = requiredID(b.Category, "category")
	}
	if msg == "" && b.Amount == nil {
		msg = "amount: required"
	}
	if msg == "" && (*b.Amount < 0 || *b.Amount > MaxOrderAmount) {
		msg = "amount: must be 0.." + strconv.Itoa(MaxOrderAmount) + ", got " + strconv.FormatInt(*b.Amount, 10)
	}
	if msg != "" {
		writeInvalid(ctx, nil, fasthttp.StatusBadRequest, msg)
		return
	}
	lv, ok := s.vouchers.(LifeVouchers)
	if !ok {
		writeJSON(ctx, answerUnavailable.status, answerUnavailable.body)
		return
	}
	lctx, cancel := context.WithTimeout(context.Background(), s.cfg.LookupTimeout)
	defer cancel()
	if !s.notBlocked(ctx, lctx, user) {
		return
	}
	v, res, err := lv.RedeemOrder(lctx, string(id), user, voucher.Order{ID: *b.OrderID, Amount: *b.Amount, Category: *b.Category})
	s.lifeAnswer(ctx, lctx, string(id), user, v, res, err)
}

// rollback serves POST .../redeem/rollback. A refund is not refused for a blocked user:
// giving a voucher back takes nothing.
func (s *Server) rollback(ctx *fasthttp.RequestCtx, id []byte) {
	user, b, ok := s.lifeRequest(ctx, id, "order_id")
	if !ok {
		return
	}
	if msg := requiredID(b.OrderID, "order_id"); msg != "" {
		writeInvalid(ctx, nil, fasthttp.StatusBadRequest, msg)
		return
	}
	lv, ok := s.vouchers.(LifeVouchers)
	if !ok {
		writeJSON(ctx, answerUnavailable.status, answerUnavailable.body)
		return
	}
	lctx, cancel := context.WithTimeout(context.Background(), s.cfg.LookupTimeout)
	defer cancel()
	v, res, err := lv.Rollback(lctx, string(id), user, *b.OrderID)
	s.lifeAnswer(ctx, lctx, string(id), user, v, res, err)
}

// transfer serves POST .../transfer: both the owner and the receiver must be neither
// blocked nor frozen.
func (s *Server) transfer(ctx *fasthttp.RequestCtx, id []byte) {
	user, b, ok := s.lifeRequest(ctx, id, "to_user_id")
	if !ok {
		return
	}
	if msg := requiredID(b.ToUserID, "to_user_id"); msg != "" {
		writeInvalid(ctx, nil, fasthttp.StatusBadRequest, msg)
		return
	}
	if *b.ToUserID == user {
		writeInvalid(ctx, nil, fasthttp.StatusBadRequest, "to_user_id: must be another user than the owner")
		return
	}
	lv, ok := s.vouchers.(LifeVouchers)
	if !ok {
		writeJSON(ctx, answerUnavailable.status, answerUnavailable.body)
		return
	}
	lctx, cancel := context.WithTimeout(context.Background(), s.cfg.LookupTimeout)
	defer cancel()
	if !s.notBlocked(ctx, lctx, user) || !s.notBlocked(ctx, lctx, *b.ToUserID) {
		return
	}
	v, res, err := lv.Transfer(lctx, string(id), user, *b.ToUserID)
	// The answer goes to the old owner: the partner code moved with the voucher and is
	// shown to its new owner only.
	v.Code = ""
	s.lifeAnswer(ctx, lctx, string(id), user, v, res, err)
}

// notBlocked answers 403 blocked (or 503) and returns false when user may not act.
func (s *Server) notBlocked(ctx *fasthttp.RequestCtx, lctx context.Context, user string) bool {
	if s.cfg.Blocker == nil {
		return true
	}
	blocked, err := s.cfg.Blocker.Blocked(lctx, user)
	if err != nil {
		s.log.Warn("block check failed", "err", err)
		writeJSON(ctx, answerUnavailable.status, answerUnavailable.body)
		return false
	}
	if blocked {
		writeJSON(ctx, fasthttp.StatusForbidden, answers[claim.CodeBlocked].body)
		return false
	}
	return true
}

func (s *Server) lifeAnswer(ctx *fasthttp.RequestCtx, lctx context.Context, claimID, user string, v Voucher, res int, err error) {
	if err != nil {
		s.log.Warn("voucher change failed", "claim_id", claimID, "err", err)
		writeJSON(ctx, answerUnavailable.status, answerUnavailable.body)
		return
	}
	switch res {
	case RedeemOK:
		writeJSON(ctx, fasthttp.StatusOK, appendVoucher(nil, &v))
	case RedeemNotOwner:
		writeJSON(ctx, fasthttp.StatusNotFound, bodyNoSuchClaim)
	case RedeemExpired:
		writeJSON(ctx, fasthttp.StatusConflict, bodyExpired)
	case RedeemRevoked:
		writeJSON(ctx, fasthttp.StatusConflict, bodyRevoked)
	case voucher.RedeemBelowMin:
		writeJSON(ctx, fasthttp.StatusConflict, bodyBelowMinSpend)
	case voucher.RedeemNotApplicable:
		writeJSON(ctx, fasthttp.StatusConflict, bodyNotApplicable)
	case voucher.RedeemOtherOrder:
		writeJSON(ctx, fasthttp.StatusConflict, bodyOtherOrder)
	case voucher.RollbackNoOrder:
		writeJSON(ctx, fasthttp.StatusConflict, bodyNoOrder)
	case voucher.TransferNotAllowed:
		writeJSON(ctx, fasthttp.StatusConflict, bodyNotTransferable)
	case voucher.TransferNotUsable:
		writeJSON(ctx, fasthttp.StatusConflict, bodyNotUsable)
	case voucher.TransferSelf:
		writeInvalid(ctx, nil, fasthttp.StatusBadRequest, "to_user_id: must be another user than the owner")
	case voucher.TransferRateLimited:
		ctx.Response.Header.SetBytesKV(hdrRetryAfter, []byte("60"))
		writeJSON(ctx, fasthttp.StatusTooManyRequests, bodyTransferRate)
	default:
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
