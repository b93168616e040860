package claim

import "strconv"

// The claim batch: claim.lua's KEYS, ARGV and results (the layout in the script's
// header). This file is its one Go owner; the gateway's claimer and every tool or test
// kit that plays a gateway build a batch with AppendClaim and read its answer with
// DecodeResult. The builder appends into caller-owned slices, reusable across batches,
// and allocates nothing beyond what growing them and boxing the arguments costs.
const (
	// BatchHeaderArgs is the number of ARGV before the first claim's: n,
	// accept_grace_ms, reject_ttl_ms.
	BatchHeaderArgs = 3
	// BatchKeysPerClaim, BatchArgsPerClaim and BatchResultsPerClaim are the layout of
	// one claim.
	BatchKeysPerClaim    = 26
	BatchArgsPerClaim    = 9
	BatchResultsPerClaim = 17
)

// Keys are one claim's KEYS, by role (claim.lua's header). The campaign-level keys are
// the same for every claim of a campaign; the risk keys name the claim's device, IP and
// user (internal/rkeys builds every name; the claimer builds them into a reused buffer).
type Keys struct {
	Meta, SKU, Request, Users, BusinessLine, Outbox, Inflight, Rejections string
	// Segment is the segment's member set, or Meta again when the campaign has none.
	Segment string
	// Risk (docs/RISK.md): the campaign's and the global rules, the velocity logs of
	// the device, IP and user in this campaign, their block keys, the device's and
	// user's freeze keys and freeze windows, the shadow rejections, the risk index.
	RiskRules, GlobalRules                   string
	VelocityDevice, VelocityIP, VelocityUser string
	BlockDevice, BlockIP, BlockUser          string
	FreezeDevice, FreezeUser                 string
	FreezeWindowDevice, FreezeWindowUser     string
	ShadowRejections, RiskIndex              string
	// PartnerQuotas is the campaign's partner quota hash.
	PartnerQuotas string
	// Pushes is the campaign's hash of push escrows (a push:<id> claim takes from its
	// push's escrow); CodePool is the SKU's set of partner codes (a SKU with a pool
	// hands one out per accepted claim). DESIGN.md "Push", "Partner code pools".
	Pushes, CodePool string
}

// Args are one claim's ARGV.
type Args struct {
	RequestID, ClaimID, CampaignID, SKU, UserID, DeviceID, IP string
	// Channel: "" for the app, "partner:<id>" (takes from that partner's quota), or
	// "push:<id>".
	Channel string
	// Draw is a lottery claim's draw (AppendDrawArg: "<odds version>:<r>", r the
	// gateway's uniform random integer in [0, total weight)), "" for any other kind. For
	// a lottery, SKU is the prize r points at under the configured weights ("" for the
	// no-prize band): the key the script may take from; the script checks both against
	// the odds it holds (STALE when the gateway's are behind).
	Draw string
}

// AppendDrawArg appends a lottery claim's Draw argument.
func AppendDrawArg(dst []byte, oddsVersion string, r int64) []byte {
	dst = append(dst, oddsVersion...)
	dst = append(dst, ':')
	return strconv.AppendInt(dst, r, 10)
}

// AppendHeader starts a batch of n claims: it resets keys and args to empty (keeping
// their arrays) and appends the header arguments.
func AppendHeader(keys []string, args []any, n int, acceptGraceMs, rejectTTLMs int64) ([]string, []any) {
	return keys[:0], append(args[:0], n, acceptGraceMs, rejectTTLMs)
}

// AppendClaim appends one claim's keys and arguments in claim.lua's order.
func AppendClaim(keys []string, args []any, k *Keys, a *Args) ([]string, []any) {
	keys = append(keys, k.Meta, k.SKU, k.Request, k.Users, k.BusinessLine, k.Outbox, k.Inflight,
		k.Rejections, k.Segment, k.RiskRules, k.GlobalRules,
		k.VelocityDevice, k.VelocityIP, k.VelocityUser,
		k.BlockDevice, k.BlockIP, k.BlockUser,
		k.FreezeDevice, k.FreezeUser, k.FreezeWindowDevice, k.FreezeWindowUser,
		k.ShadowRejections, k.RiskIndex, k.PartnerQuotas, k.Pushes, k.CodePool)
	args = append(args, a.RequestID, a.ClaimID, a.CampaignID, a.SKU, a.UserID, a.DeviceID, a.IP, a.Channel, a.Draw)
	return keys, args
}

// Outcome is one claim's answer from claim.lua, by name.
type Outcome struct {
	Code         int // a Code* of code.go
	Replayed     bool
	ClaimID      string
	Value        int64
	ClaimedAtMs  int64
	ExpiresAtMs  int64
	OutboxID     string
	RetryAfterMs int64
	// DecidedAtMs is the Redis time of the decision (the same for the whole batch).
	DecidedAtMs int64
	// What the risk rules saw: the device, IP and user counts in their velocity
	// windows, the device's and user's counts in the freeze window (-1: rule off or not
	// evaluated), and the risk flags (internal/risk.Flags).
	SeenDevice, SeenIP, SeenUser     int64
	SeenFreezeDevice, SeenFreezeUser int64
	Flags                            int64
	// Prize is a lottery draw's prize: the SKU won (ACCEPTED, fresh or replayed), ""
	// otherwise.
	Prize string
	// PartnerCode is the partner code an accepted claim of a SKU with a code pool took
	// ("" otherwise); it goes into the claim's record (Record.Code).
	PartnerCode string
}

// ResultsFor reports whether res is the answer to a batch of n claims.
func ResultsFor(res []any, n int) bool { return len(res) == n*BatchResultsPerClaim }

// DecodeResult reads claim i's answer from res (claim.lua's reply, as go-redis returns
// it: int64 and string values) into o.
func DecodeResult(res []any, i int, o *Outcome) {
	r := res[i*BatchResultsPerClaim : (i+1)*BatchResultsPerClaim]
	o.Code = int(asInt(r[0]))
	o.Replayed = asInt(r[1]) == 1
	o.ClaimID, _ = r[2].(string)
	o.Value = asInt(r[3])
	o.ClaimedAtMs = asInt(r[4])
	o.ExpiresAtMs = asInt(r[5])
	o.OutboxID, _ = r[6].(string)
	o.RetryAfterMs = asInt(r[7])
	o.DecidedAtMs = asInt(r[8])
	o.SeenDevice = asInt(r[9])
	o.SeenIP = asInt(r[10])
	o.SeenUser = asInt(r[11])
	o.SeenFreezeDevice = asInt(r[12])
	o.SeenFreezeUser = asInt(r[13])
	o.Flags = asInt(r[14])
	o.Prize, _ = r[15].(string)
	o.PartnerCode, _ = r[16].(string)
}

// DecidedAtMs is the batch's Redis time (every claim carries it), 0 for an empty reply.
func DecidedAtMs(res []any) int64 {
	if len(res) < BatchResultsPerClaim {
		return 0
	}
	return asInt(res[8])
}

func asInt(v any) int64 {
	switch x := v.(type) {
	case int64:
		return x
	case string:
		n, _ := strconv.ParseInt(x, 10, 64)
		return n
	}
	return 0
}

// AppendDrawArgString is AppendDrawArg as a string (tools and tests).
func AppendDrawArgString(oddsVersion string, r int64) string {
	return string(AppendDrawArg(nil, oddsVersion, r))
}
