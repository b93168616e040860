// Package scripts owns flashgate's Redis Lua scripts. They live as .lua files beside
// this one, are embedded into every binary, and are run through go-redis's Script, which
// calls EVALSHA and falls back to EVAL (loading the script) on NOSCRIPT.
package scripts

import (
	_ "embed"

	"github.com/redis/go-redis/v9"
)

var (
	//go:embed claim.lua
	claimSrc string
	//go:embed void.lua
	voidSrc string
	//go:embed confirm.lua
	confirmSrc string
	//go:embed durable.lua
	durableSrc string
	//go:embed push.lua
	pushSrc string
	//go:embed codes.lua
	codesSrc string
)

// Layout of claim.lua's batch: keys, arguments and results per claim, and the number of
// header arguments before the first claim's.
//
// The gateway's layout is ClaimKeysPerClaim+ClaimRiskKeysPerClaim+ClaimPartnerKeysPerClaim
// keys, ClaimArgsPerClaim+ClaimChannelArgsPerClaim arguments and
// ClaimResultsPerClaim+ClaimRiskResultsPerClaim results per claim (risk checks on, the
// claim's channel and its partner's quota). The base layout, ClaimKeysPerClaim keys,
// ClaimArgsPerClaim arguments and ClaimResultsPerClaim results, is the one from before
// the risk checks; test fixtures that play a gateway still use it and get no risk checks
// and the app channel. claim.lua tells them apart by the number of keys.
const (
	ClaimKeysPerClaim        = 9
	ClaimRiskKeysPerClaim    = 14
	ClaimPartnerKeysPerClaim = 3 // partner quotas, push escrows, the SKU's code pool
	ClaimArgsPerClaim        = 7
	ClaimChannelArgsPerClaim = 1
	ClaimHeaderArgs          = 3
	ClaimResultsPerClaim     = 8
	ClaimRiskResultsPerClaim = 8 // the risk results and the partner code

	// ClaimGatewayKeysPerClaim and ClaimGatewayArgsPerClaim are the gateway's layout.
	ClaimGatewayKeysPerClaim = ClaimKeysPerClaim + ClaimRiskKeysPerClaim + ClaimPartnerKeysPerClaim
	ClaimGatewayArgsPerClaim = ClaimArgsPerClaim + ClaimChannelArgsPerClaim
)

var (
	// Claim decides a batch of claims: see claim.lua for its layout.
	Claim = redis.NewScript(claimSrc)
	// Void gives back what one accepted claim took after its produce failed.
	Void = redis.NewScript(voidSrc)
	// Confirm marks claims read from Kafka as settling, or tells the settler to skip them.
	Confirm = redis.NewScript(confirmSrc)
	// Durable marks claims whose produce the broker acknowledged.
	Durable = redis.NewScript(durableSrc)
	// Push holds or releases a push's escrow (DESIGN.md "Push").
	Push = redis.NewScript(pushSrc)
	// Codes adds partner codes to a SKU's pool (DESIGN.md "Partner code pools").
	Codes = redis.NewScript(codesSrc)
)

// Results of push.lua (the first element of its reply).
const (
	PushHeld     = 1
	PushRefused  = 2
	PushNotWarm  = 3
	PushReleased = 4
)

// Results of void.lua and confirm.lua. claim.lua's result codes have their Go owner in
// internal/claim (code.go: the table of codes, reasons and HTTP statuses).
const (
	VoidGone      = 0
	VoidDone      = 1
	VoidAlready   = 2
	VoidConfirmed = 3

	ConfirmSkip    = 0
	ConfirmWrite   = 1
	ConfirmNoTrace = 2
	// ConfirmUndecided: the record is still A (neither durable nor voided); the
	// settler waits for the gateway, and voids it past its deadline.
	ConfirmUndecided = 3
)

// Settlement-side scripts (issue 5): budget recovery on expiry and the rebuild of a
// campaign's counters after a Redis loss. See each .lua header for its layout.
var (
	//go:embed release.lua
	releaseSrc string
	//go:embed fence.lua
	fenceSrc string
	//go:embed lease.lua
	leaseSrc string
	//go:embed rebuild.lua
	rebuildSrc string
	//go:embed unfence.lua
	unfenceSrc string
	//go:embed warm.lua
	warmSrc string
	//go:embed budget.lua
	budgetSrc string

	// Release gives expired vouchers' value back to their budgets, once per claim.
	Release = redis.NewScript(releaseSrc)
	// Fence stops a business line's campaigns accepting while they are rebuilt.
	Fence = redis.NewScript(fenceSrc)
	// Lease extends or drops a recovery lock held by the caller.
	Lease = redis.NewScript(leaseSrc)
	// Rebuild writes one campaign's counters back from the books.
	Rebuild = redis.NewScript(rebuildSrc)
	// Unfence restores a business line's budget and totals and drops the lock.
	Unfence = redis.NewScript(unfenceSrc)
	// Warm writes a campaign's definition into Redis, deciding by the Redis clock what
	// may change (internal/catalog).
	Warm = redis.NewScript(warmSrc)
	// Budget sets a business line's budget unless a recovery fences it (then the
	// recovery's unfence applies it).
	Budget = redis.NewScript(budgetSrc)
)

// Results of release.lua (besides one 1/0 per claim), fence.lua, rebuild.lua and
// unfence.lua.
const (
	ReleaseFenced = -1
	ReleaseStale  = -2

	FenceHeld = 0
	FenceDone = 1

	RebuildLost = -1

	WarmDone       = 1
	WarmStarted    = 2
	WarmRecovering = 3
	WarmSKUsMoved  = 4
	WarmBelowTaken = 5
)
