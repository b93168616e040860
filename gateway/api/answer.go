package api

import (
	"strconv"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/flashgate/flashgate/internal/claim"
)

// answer is how one script code is told to the client, built from the result-code
// table (internal/claim code.go: status and reason word); this is the only place that
// turns a claim outcome into HTTP bytes.
type answer struct {
	status int
	reason string // "" for accepted and refusals
	body   []byte // the whole body when it does not vary (nil for 200 and 429)
	label  string // metric label
}

// answers holds one entry per code a client can be told: accepted, every rejection
// and every refusal (the internal retry codes end as 503 answerUnavailable).
var answers = func() map[int]answer {
	m := map[int]answer{}
	for _, r := range claim.Results {
		switch {
		case r.Kind == claim.KindAccepted, r.Kind == claim.KindNoPrize:
			m[r.Code] = answer{status: r.Status, label: r.Reason}
		case r.Kind == claim.KindRejected && r.Status == fasthttp.StatusTooManyRequests:
			// The body carries retry_after_ms (appendVelocity).
			m[r.Code] = answer{status: r.Status, reason: r.Reason, label: r.Reason}
		case r.Kind == claim.KindRejected:
			m[r.Code] = answer{status: r.Status, reason: r.Reason, label: r.Reason,
				body: []byte(`{"result":"rejected","reason":"` + r.Reason + `"}`)}
		case r.Kind == claim.KindRefused:
			m[r.Code] = failure(r.Status, r.Reason, r.Reason)
		}
	}
	return m
}()

func failure(status int, errName, label string) answer {
	return answer{status: status, label: label, body: []byte(`{"error":"` + errName + `"}`)}
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
	wonPrefix        = []byte(`{"result":"won","claim_id":`)
	noPrizePrefix    = []byte(`{"result":"no_prize","draw_id":`)
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
	return appendClaimBody(buf, acceptedPrefix, claimID, campaign, sku, user, value, expiresMs)
}

// appendNoPrize appends the 200 body of a lottery draw that won nothing (CONTRACT.md
// "Redemption kinds"; a won draw is appendClaimBody with wonPrefix).
func appendNoPrize(buf []byte, drawID, campaign, user string) []byte {
	buf = append(buf, noPrizePrefix...)
	buf = claim.AppendString(buf, drawID)
	buf = append(buf, `,"campaign_id":`...)
	buf = claim.AppendString(buf, campaign)
	buf = append(buf, `,"user_id":`...)
	buf = claim.AppendString(buf, user)
	return append(buf, '}')
}

// appendDraw appends the GET /v1/claims/{draw_id} body of a draw that won nothing: the
// POST's no-prize fields (appendNoPrize), then its state and drawn_at.
func appendDraw(buf []byte, d *Draw) []byte {
	buf = appendNoPrize(buf, d.DrawID, d.CampaignID, d.UserID)
	buf = append(buf[:len(buf)-1], `,"state":`...)
	buf = claim.AppendString(buf, d.State)
	buf = appendTime(buf, "drawn_at", d.DrawnAt)
	return append(buf, '}')
}

func appendClaimBody(buf, prefix []byte, claimID, campaign, sku, user string, value, expiresMs int64) []byte {
	buf = append(buf, prefix...)
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
