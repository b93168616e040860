package api

import (
	"strconv"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/flashgate/flashgate/internal/claim"
	"github.com/flashgate/flashgate/scripts"
)

// answer is how one script code is told to the client. This table is the only place
// that turns a claim outcome into HTTP.
type answer struct {
	status int
	reason string // "" for accepted
	body   []byte // the whole body when it does not vary
	label  string // metric label
}

func rejected(status int, reason string) answer {
	return answer{status: status, reason: reason, label: reason,
		body: []byte(`{"result":"rejected","reason":"` + reason + `"}`)}
}

func failure(status int, errName, label string) answer {
	return answer{status: status, label: label, body: []byte(`{"error":"` + errName + `"}`)}
}

var answers = map[int]answer{
	scripts.CodeAccepted:        {status: fasthttp.StatusOK, label: "accepted"},
	scripts.CodeSoldOut:         rejected(fasthttp.StatusConflict, scripts.Reasons[scripts.CodeSoldOut]),
	scripts.CodeBudgetExhausted: rejected(fasthttp.StatusConflict, scripts.Reasons[scripts.CodeBudgetExhausted]),
	scripts.CodeUserLimit:       rejected(fasthttp.StatusConflict, scripts.Reasons[scripts.CodeUserLimit]),
	scripts.CodeNotStarted:      rejected(fasthttp.StatusConflict, scripts.Reasons[scripts.CodeNotStarted]),
	scripts.CodeEnded:           rejected(fasthttp.StatusConflict, scripts.Reasons[scripts.CodeEnded]),
	scripts.CodePaused:          rejected(fasthttp.StatusConflict, scripts.Reasons[scripts.CodePaused]),
	scripts.CodeNotEligible:     rejected(fasthttp.StatusConflict, scripts.Reasons[scripts.CodeNotEligible]),
	scripts.CodePartnerQuota:    rejected(fasthttp.StatusConflict, scripts.Reasons[scripts.CodePartnerQuota]),
	scripts.CodeDeviceVelocity:  {status: fasthttp.StatusTooManyRequests, reason: scripts.Reasons[scripts.CodeDeviceVelocity], label: scripts.Reasons[scripts.CodeDeviceVelocity]},
	scripts.CodeIPVelocity:      {status: fasthttp.StatusTooManyRequests, reason: scripts.Reasons[scripts.CodeIPVelocity], label: scripts.Reasons[scripts.CodeIPVelocity]},
	scripts.CodeUserVelocity:    {status: fasthttp.StatusTooManyRequests, reason: scripts.Reasons[scripts.CodeUserVelocity], label: scripts.Reasons[scripts.CodeUserVelocity]},
	scripts.CodeBlocked:         rejected(fasthttp.StatusForbidden, scripts.Reasons[scripts.CodeBlocked]),
	scripts.CodeUnknownCampaign: failure(fasthttp.StatusNotFound, "unknown_campaign", "unknown_campaign"),
	scripts.CodeUnknownSKU:      failure(fasthttp.StatusNotFound, "unknown_sku", "unknown_sku"),
	scripts.CodeKeyReuse:        failure(fasthttp.StatusUnprocessableEntity, "idempotency_key_reuse", "idempotency_key_reuse"),
}

var (
	answerUnavailable = failure(fasthttp.StatusServiceUnavailable, "unavailable", "unavailable")
	// Labels for outcomes decided before the claim script.
	labelInvalid = "invalid_request"
)

var (
	jsonType         = []byte("application/json")
	hdrReplayed      = []byte("Idempotent-Replayed")
	hdrRetryAfter    = []byte("Retry-After")
	valTrue          = []byte("true")
	valOne           = []byte("1")
	bodyNotFound     = []byte(`{"error":"not_found"}`)
	bodyMethod       = []byte(`{"error":"method_not_allowed"}`)
	bodyNoSuchClaim  = []byte(`{"error":"unknown_claim"}`)
	bodyExpired      = []byte(`{"result":"rejected","reason":"expired"}`)
	bodyRevoked      = []byte(`{"result":"rejected","reason":"revoked"}`)
	bodyNotSettled   = []byte(`{"result":"rejected","reason":"pending"}`)
	expiresAtLayout  = "2006-01-02T15:04:05.000Z07:00"
	invalidPrefix    = []byte(`{"error":"invalid_request","message":`)
	acceptedPrefix   = []byte(`{"result":"accepted","claim_id":`)
	rejectedVelocity = []byte(`{"result":"rejected","reason":"`)
)

func writeJSON(ctx *fasthttp.RequestCtx, status int, body []byte) {
	ctx.SetStatusCode(status)
	ctx.Response.Header.SetContentTypeBytes(jsonType)
	ctx.SetBody(body)
}

// writeInvalid writes a 400/413/415 with a message naming what was wrong.
func writeInvalid(ctx *fasthttp.RequestCtx, buf []byte, status int, msg string) []byte {
	buf = append(buf[:0], invalidPrefix...)
	buf = claim.AppendString(buf, msg)
	buf = append(buf, '}')
	writeJSON(ctx, status, buf)
	return buf
}

// appendAccepted appends the 200 body for an accepted claim.
func appendAccepted(buf []byte, claimID, campaign, sku, user string, value, expiresMs int64) []byte {
	buf = append(buf, acceptedPrefix...)
	buf = claim.AppendString(buf, claimID)
	buf = append(buf, `,"campaign_id":`...)
	buf = claim.AppendString(buf, campaign)
	buf = append(buf, `,"sku":`...)
	buf = claim.AppendString(buf, sku)
	buf = append(buf, `,"user_id":`...)
	buf = claim.AppendString(buf, user)
	buf = append(buf, `,"value":`...)
	buf = strconv.AppendInt(buf, value, 10)
	buf = append(buf, `,"expires_at":"`...)
	buf = time.UnixMilli(expiresMs).UTC().AppendFormat(buf, expiresAtLayout)
	return append(buf, '"', '}')
}

// appendVelocity appends a 429 body with its retry_after_ms.
func appendVelocity(buf []byte, reason string, retryMs int64) []byte {
	buf = append(buf, rejectedVelocity...)
	buf = append(buf, reason...)
	buf = append(buf, `","retry_after_ms":`...)
	buf = strconv.AppendInt(buf, retryMs, 10)
	return append(buf, '}')
}
