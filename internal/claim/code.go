package claim

import "strconv"

// Result codes of claim.lua (its `local X = n` constants; code_test.go parses the script
// and fails when the two disagree). This file is their one Go owner: the gateway's
// answers, the claimer, the decision log, the campaign figures and bench read the table
// below instead of a switch of their own, in the manner of franz-go's kerr.
const (
	CodeAccepted        = 1
	CodeNoPrize         = 2
	CodeSoldOut         = 10
	CodeBudgetExhausted = 11
	CodeUserLimit       = 12
	CodeNotStarted      = 13
	CodeEnded           = 14
	CodePaused          = 15
	CodeNotEligible     = 16
	CodePartnerQuota    = 17
	CodeDeviceVelocity  = 20
	CodeIPVelocity      = 21
	CodeUserVelocity    = 22
	CodeBlocked         = 30
	CodeUnknownCampaign = 40
	CodeUnknownSKU      = 41
	CodeKeyReuse        = 42
	CodeStale           = 50
	CodeNotWarm         = 51
	CodeInFlight        = 52
	// CodeInsufficientPoints is answered by the gateway's points step (a points_item
	// claim whose user's hot balance less what it holds is below the price) before
	// claim.lua runs; the script only reserves the number.
	CodeInsufficientPoints = 60
)

// Kinds of result: what the client is told.
const (
	KindAccepted = "accepted" // 200, a claim
	KindNoPrize  = "no_prize" // 200, a lottery draw that won nothing: a draw_id
	KindRejected = "rejected" // a CONTRACT.md rejection (409, 429, 403): "result":"rejected"
	KindRefused  = "refused"  // the request names nothing claimable (404, 422): "error":...
	KindRetry    = "retry"    // internal: the gateway retries or answers 503; never a reason
)

// Result describes one code: its number, the word CONTRACT.md uses for it (the
// "reason" of a rejection, the "error" of a refusal, the key of the rejection counts in
// a campaign's figures), the HTTP status the gateway answers, whether the client may
// retry the same request_id and get another answer, and whether the claim took
// nothing (no stock, budget or quota moved).
type Result struct {
	Code int
	// Lua is the constant's name in claim.lua.
	Lua    string
	Reason string
	Kind   string
	Status int
	// Retriable: a retry with the same request_id may be decided differently (a 429
	// after retry_after_ms, a 503, a campaign not started yet).
	Retriable bool
	// NothingTaken: no unit, budget or quota was taken for this answer.
	NothingTaken bool
	// Remembered: claim.lua stores the rejection in the idempotency record, so a retry
	// of the request_id is answered the same (DESIGN.md "Which rejections are
	// remembered").
	Remembered bool
}

// HTTP statuses (numbers, so this package links no net/http).
const (
	statusOK              = 200
	statusForbidden       = 403
	statusNotFound        = 404
	statusConflict        = 409
	statusUnprocessable   = 422
	statusTooManyRequests = 429
	statusUnavailable     = 503
)

// Results is the table, one row per code, in code order.
var Results = [...]Result{
	{Code: CodeAccepted, Lua: "ACCEPTED", Reason: "accepted", Kind: KindAccepted, Status: statusOK},
	// A lottery draw that won nothing (DESIGN.md "Lottery"): made durable like an
	// accepted claim (outbox, flash.claims, a draws row) and replayed the same way; it
	// takes only one from the user's per_user_limit (and counts in the velocity windows).
	{Code: CodeNoPrize, Lua: "NO_PRIZE", Reason: "no_prize", Kind: KindNoPrize, Status: statusOK, NothingTaken: true},
	{Code: CodeSoldOut, Lua: "SOLD_OUT", Reason: "sold_out", Kind: KindRejected, Status: statusConflict, Retriable: true, NothingTaken: true},
	{Code: CodeBudgetExhausted, Lua: "BUDGET_EXHAUSTED", Reason: "budget_exhausted", Kind: KindRejected, Status: statusConflict, NothingTaken: true, Remembered: true},
	{Code: CodeUserLimit, Lua: "USER_LIMIT", Reason: "user_limit", Kind: KindRejected, Status: statusConflict, NothingTaken: true, Remembered: true},
	{Code: CodeNotStarted, Lua: "NOT_STARTED", Reason: "not_started", Kind: KindRejected, Status: statusConflict, Retriable: true, NothingTaken: true},
	{Code: CodeEnded, Lua: "ENDED", Reason: "ended", Kind: KindRejected, Status: statusConflict, NothingTaken: true, Remembered: true},
	{Code: CodePaused, Lua: "PAUSED", Reason: "paused", Kind: KindRejected, Status: statusConflict, Retriable: true, NothingTaken: true},
	{Code: CodeNotEligible, Lua: "NOT_ELIGIBLE", Reason: "not_eligible", Kind: KindRejected, Status: statusConflict, NothingTaken: true, Remembered: true},
	{Code: CodePartnerQuota, Lua: "PARTNER_QUOTA", Reason: "partner_quota", Kind: KindRejected, Status: statusConflict, NothingTaken: true, Remembered: true},
	{Code: CodeDeviceVelocity, Lua: "DEVICE_VELOCITY", Reason: "device_velocity", Kind: KindRejected, Status: statusTooManyRequests, Retriable: true, NothingTaken: true},
	{Code: CodeIPVelocity, Lua: "IP_VELOCITY", Reason: "ip_velocity", Kind: KindRejected, Status: statusTooManyRequests, Retriable: true, NothingTaken: true},
	{Code: CodeUserVelocity, Lua: "USER_VELOCITY", Reason: "user_velocity", Kind: KindRejected, Status: statusTooManyRequests, Retriable: true, NothingTaken: true},
	{Code: CodeBlocked, Lua: "BLOCKED", Reason: "blocked", Kind: KindRejected, Status: statusForbidden, Retriable: true, NothingTaken: true},
	{Code: CodeUnknownCampaign, Lua: "UNKNOWN_CAMPAIGN", Reason: "unknown_campaign", Kind: KindRefused, Status: statusNotFound, NothingTaken: true},
	{Code: CodeUnknownSKU, Lua: "UNKNOWN_SKU", Reason: "unknown_sku", Kind: KindRefused, Status: statusNotFound, NothingTaken: true},
	{Code: CodeKeyReuse, Lua: "KEY_REUSE", Reason: "idempotency_key_reuse", Kind: KindRefused, Status: statusUnprocessable, NothingTaken: true},
	{Code: CodeStale, Lua: "STALE", Reason: "stale", Kind: KindRetry, Status: statusUnavailable, Retriable: true, NothingTaken: true},
	{Code: CodeNotWarm, Lua: "NOT_WARM", Reason: "not_warm", Kind: KindRetry, Status: statusUnavailable, Retriable: true, NothingTaken: true},
	{Code: CodeInFlight, Lua: "IN_FLIGHT", Reason: "in_flight", Kind: KindRetry, Status: statusUnavailable, Retriable: true, NothingTaken: true},
	{Code: CodeInsufficientPoints, Lua: "INSUFFICIENT_POINTS", Reason: "insufficient_points", Kind: KindRejected, Status: statusConflict, Retriable: true, NothingTaken: true},
}

// byCode indexes Results by code (codes are small).
var byCode = func() (t [64]int8) {
	for i := range t {
		t[i] = -1
	}
	for i, r := range Results {
		t[r.Code] = int8(i)
	}
	return t
}()

// ResultOf returns the row of code, and false for a code the table does not know.
func ResultOf(code int) (Result, bool) {
	if code < 0 || code >= len(byCode) || byCode[code] < 0 {
		return Result{}, false
	}
	return Results[byCode[code]], true
}

// ReasonOf is the code's word, or "code_<n>" for a code the table does not know.
func ReasonOf(code int) string {
	if r, ok := ResultOf(code); ok {
		return r.Reason
	}
	return "code_" + strconv.Itoa(code)
}

// IsRejection reports whether code is a CONTRACT.md rejection (a 409, 429 or 403 with
// a reason, counted in the campaign's rejection figures).
func IsRejection(code int) bool {
	r, ok := ResultOf(code)
	return ok && r.Kind == KindRejected
}

// CodeOfReason is the inverse of ReasonOf for the codes the table knows.
func CodeOfReason(reason string) (int, bool) {
	for _, r := range Results {
		if r.Reason == reason {
			return r.Code, true
		}
	}
	return 0, false
}
