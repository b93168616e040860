// Package rkeys owns the names of every Redis key flashgate uses. The gateway, the
// settler, riskctl and bench all build keys here so that the layout documented in
// DESIGN.md has exactly one implementation.
//
// Campaign-scoped keys carry the campaign id as a hash tag ("fg:{cny-2027}:meta") so all
// of one campaign's state lives in one Redis Cluster slot. Ids are restricted to
// [A-Za-z0-9._:-] by the API, so they cannot contain braces and a tag is unambiguous;
// each key kind has its own fixed prefix inside the tag, so an id containing ':' cannot
// collide with another kind of key.
package rkeys

import "github.com/flashgate/flashgate/internal/claim"

// Campaigns is the set of every warmed campaign id; the settler's background work
// (outbox relay, reconciliation, expiry) discovers campaigns through it.
const Campaigns = "fg:campaigns"

// Tag is the hash tag of a campaign.
func Tag(campaign string) string { return "{" + campaign + "}" }

// Meta is the campaign's hash: business line, window, limits, budget and spent.
func Meta(campaign string) string { return "fg:{" + campaign + "}:meta" }

// SKUs is the set of a campaign's SKU ids.
func SKUs(campaign string) string { return "fg:{" + campaign + "}:skus" }

// SKU is one SKU's hash: stock left, value, accepted ("taken").
func SKU(campaign, sku string) string { return "fg:{" + campaign + "}:sku:" + sku }

// Request is the idempotency record of one request_id within a campaign.
func Request(campaign, requestID string) string { return "fg:{" + campaign + "}:rq:" + requestID }

// Users is the hash of accepted claims per user in a campaign (the per-user limit).
func Users(campaign string) string { return "fg:{" + campaign + "}:uc" }

// Outbox is the stream of accepted claims not yet committed in Postgres.
func Outbox(campaign string) string { return "fg:{" + campaign + "}:outbox" }

// Inflight is the hash claim_id → request_id of accepted claims not yet in Postgres;
// GET /v1/claims/{id} answers "pending" from it.
func Inflight(campaign string) string { return "fg:{" + campaign + "}:inflight" }

// Rejections is the hash of rejection counts by reason code.
func Rejections(campaign string) string { return "fg:{" + campaign + "}:rej" }

// BusinessLine is a business line's budget hash (budget, spent). It is tagged by the
// business line, not a campaign: see DESIGN.md on why a claim crosses that slot.
func BusinessLine(id string) string { return "fg:bl:{" + id + "}" }

// Segment is the set of user ids in a named segment.
func Segment(name string) string { return "fg:seg:{" + name + "}" }

// Risk state (docs/RISK.md). A campaign's rules and its sliding windows carry the
// campaign's tag; what spans campaigns - the global rules, blocks, freezes and the
// freeze windows - lives under the one tag {risk}. A claim therefore touches the
// campaign's slot and the {risk} slot (besides its business line's): on Redis Cluster
// those must be co-located the same way as the business line (DESIGN.md).

// RiskTag is the hash tag of every cross-campaign risk key.
const RiskTag = "{risk}"

// RiskGlobalRules is the hash of the global default rules.
const RiskGlobalRules = "fg:{risk}:rules"

// RiskRules is a campaign's hash of rule overrides.
func RiskRules(campaign string) string { return "fg:{" + campaign + "}:risk" }

// Velocity kinds: the single letter used in key names and block/freeze keys.
const (
	KindDevice = 'd'
	KindIP     = 'i'
	KindUser   = 'u'
)

// Velocity is a campaign's sliding-window log (a sorted set of accepted request ids
// scored by the Redis time in ms) of one device, IP or user.
func Velocity(campaign string, kind byte, value string) string {
	return "fg:{" + campaign + "}:v" + string(kind) + ":" + value
}

// Block is the key whose existence blocks a device, IP or user (value: reason; TTL).
func Block(kind byte, value string) string { return "fg:{risk}:blk:" + string(kind) + ":" + value }

// Freeze is the key whose existence freezes a device or user (set by the claim script
// when the freeze rule trips; value: what tripped it; TTL freeze.for).
func Freeze(kind byte, value string) string { return "fg:{risk}:frz:" + string(kind) + ":" + value }

// FreezeWindow is the sliding-window log of a device's or user's accepted claims across
// campaigns, which the freeze rule counts.
func FreezeWindow(kind byte, value string) string {
	return "fg:{risk}:fw:" + string(kind) + ":" + value
}

// RiskIndex is the sorted set of every block and freeze ("blk:d:<device>",
// "frz:u:<user>": the key name after "fg:{risk}:"), scored by when it expires (ms), so
// riskctl lists them without scanning the key space.
const RiskIndex = "fg:{risk}:index"

// ShadowRejections is the hash of would-be rejections by reason code that shadow mode
// let through in a campaign.
func ShadowRejections(campaign string) string { return "fg:{" + campaign + "}:rejshadow" }

// AppendVelocity, AppendBlock, AppendFreeze and AppendFreezeWindow append the same
// names as above to dst, for the claim path that builds many keys per batch into one
// buffer instead of allocating each.
func AppendVelocity(dst []byte, campaign string, kind byte, value string) []byte {
	dst = append(dst, "fg:{"...)
	dst = append(dst, campaign...)
	dst = append(dst, "}:v"...)
	dst = append(dst, kind, ':')
	return append(dst, value...)
}

func AppendBlock(dst []byte, kind byte, value string) []byte {
	dst = append(dst, "fg:{risk}:blk:"...)
	dst = append(dst, kind, ':')
	return append(dst, value...)
}

func AppendFreeze(dst []byte, kind byte, value string) []byte {
	dst = append(dst, "fg:{risk}:frz:"...)
	dst = append(dst, kind, ':')
	return append(dst, value...)
}

func AppendFreezeWindow(dst []byte, kind byte, value string) []byte {
	dst = append(dst, "fg:{risk}:fw:"...)
	dst = append(dst, kind, ':')
	return append(dst, value...)
}

// PartnerQuotas is the campaign's hash of partner quotas (KEYS 24 of claim.lua's
// layout): field "q:<partner>" is the partner's quota in the campaign, "t:<partner>" how
// many claims it has taken. The catalog writes the quotas (from Postgres); claim.lua and
// void.lua move the taken counts (DESIGN.md "Partners").
func PartnerQuotas(campaign string) string { return "fg:{" + campaign + "}:pq" }

// AppendPartnerQuotas appends PartnerQuotas(campaign) to dst (the claim path's buffer).
func AppendPartnerQuotas(dst []byte, campaign string) []byte {
	dst = append(dst, "fg:{"...)
	dst = append(dst, campaign...)
	return append(dst, "}:pq"...)
}

// Pushes is the campaign's hash of push escrows (KEYS 25 of claim.lua's layout;
// DESIGN.md "Push"): per push "b:<push>" the budget still held for it, "u:<push>:<sku>"
// the units still held, "st:<push>" its escrow state (1 held, 2 released). push.lua
// writes it; claim.lua and void.lua move the held amounts.
func Pushes(campaign string) string { return "fg:{" + campaign + "}:push" }

// AppendPushes appends Pushes(campaign) to dst (the claim path's buffer).
func AppendPushes(dst []byte, campaign string) []byte {
	dst = append(dst, "fg:{"...)
	dst = append(dst, campaign...)
	return append(dst, "}:push"...)
}

// CodePool is the set of a SKU's partner codes not yet handed out (KEYS 26 of claim.lua's
// layout; DESIGN.md "Partner code pools"); CodesAll is the set of every code ever added
// to the pool, so an import never puts back a code that was handed out.
func CodePool(campaign, sku string) string { return "fg:{" + campaign + "}:codes:" + sku }
func CodesAll(campaign, sku string) string { return "fg:{" + campaign + "}:codesall:" + sku }

// VoidKeys are void.lua's KEYS for a claim of sku by request in campaign (business line
// bl): the counters it gives back to, the partner quotas, the push escrows and the
// SKU's code pool, so a void from any process gives back everything a claim took.
func VoidKeys(campaign, sku, requestID, bl string) []string {
	return []string{Meta(campaign), SKU(campaign, sku), Request(campaign, requestID), Users(campaign),
		BusinessLine(bl), Outbox(campaign), Inflight(campaign), PartnerQuotas(campaign), Pushes(campaign),
		CodePool(campaign, sku)}
}

// Partner quota hash fields.
func PartnerQuotaField(partner string) string { return "q:" + partner }
func PartnerTakenField(partner string) string { return "t:" + partner }

// Settlement keys (issue 5: expiry, reconciliation, Redis-loss recovery).

// Released is the set of a campaign's claim ids whose value release.lua has given back
// (budget recovery on expiry): the once-only guard of that release.
func Released(campaign string) string { return "fg:{" + campaign + "}:released" }

// ServerRunID holds the run id of the Redis server the whole keyspace was last checked
// on by internal/recovery. A different value means Redis restarted (or was replaced).
const ServerRunID = "fg:runid"

// RecoveryLock is the recovery lock of a business line. It carries the business line's
// tag, so it lives in the same slot as the business line's budget hash it fences.
func RecoveryLock(businessLine string) string { return "fg:recover:{" + businessLine + "}" }

// UsersRebuild and ReleasedRebuild are the copies a rebuild loads before rebuild.lua
// swaps them in for Users and Released; they carry the campaign's tag.
func UsersRebuild(campaign string) string    { return "fg:{" + campaign + "}:rebuild:uc" }
func ReleasedRebuild(campaign string) string { return "fg:{" + campaign + "}:rebuild:released" }

// Hash fields that settlement adds to the hashes above.
const (
	// FieldRunID (Meta) is the run id of the Redis server whose counters are known good
	// for the campaign: set by catalog's warm, on first sight by internal/recovery, and by
	// every rebuild. A different run id means Redis restarted since.
	FieldRunID = "rid"
	// FieldRecovering (Meta) holds the token of the recovery rebuilding the campaign.
	FieldRecovering = "recovering"
	// FieldReleased (Meta, BusinessLine) is the value given back by expiry so far.
	FieldReleased = "released"
	// FieldRecycled (SKU) is how many units expiry put back on sale.
	FieldRecycled = "recycled"
)

// Changes is the pub/sub channel on which everything that raises a SKU's stock or
// changes a campaign's definition (void.lua, release.lua with recycling, rebuild.lua, a
// campaign PUT, pause and resume) publishes one of the campaign's key names, after the
// change. Gateways then forget what they concluded about that campaign (sold out, not
// started, ended): DESIGN.md "The path of a claim".
const Changes = "fg:changes"

// CampaignOfKey returns the campaign of a campaign-scoped key ("fg:{c}:..."), or "" for
// any other string.
func CampaignOfKey(key string) string {
	const prefix = "fg:{"
	if len(key) < len(prefix) || key[:len(prefix)] != prefix {
		return ""
	}
	for i := len(prefix); i < len(key); i++ {
		if key[i] == '}' {
			if i+1 < len(key) && key[i+1] == ':' && i > len(prefix) {
				return key[len(prefix):i]
			}
			return ""
		}
	}
	return ""
}

// Points is a user's hot points balance (DESIGN.md "Points"): a hash in the user's own
// slot ({u:<user>}) with "bal", "ok" (set by the rebuild from Postgres) and one
// "g:<grant_id>" field per grant applied, so a grant is applied exactly once.
func Points(user string) string { return "fg:{u:" + user + "}:pts" }

// ClaimKeys names every key of one claim in claim.lua's batch (internal/claim Keys),
// allocating each name: for tools and test kits that play a gateway (the claimer builds
// the same names into one reused buffer). segment "" means the campaign has none (then
// the meta key stands in, as claim.lua expects).
func ClaimKeys(campaign, sku, requestID, businessLine, segment, device, ip, user string) claim.Keys {
	seg := Meta(campaign)
	if segment != "" {
		seg = Segment(segment)
	}
	return claim.Keys{Meta: Meta(campaign), SKU: SKU(campaign, sku), Request: Request(campaign, requestID),
		Users: Users(campaign), BusinessLine: BusinessLine(businessLine), Outbox: Outbox(campaign),
		Inflight: Inflight(campaign), Rejections: Rejections(campaign), Segment: seg,
		RiskRules: RiskRules(campaign), GlobalRules: RiskGlobalRules,
		VelocityDevice: Velocity(campaign, KindDevice, device), VelocityIP: Velocity(campaign, KindIP, ip),
		VelocityUser: Velocity(campaign, KindUser, user),
		BlockDevice:  Block(KindDevice, device), BlockIP: Block(KindIP, ip), BlockUser: Block(KindUser, user),
		FreezeDevice: Freeze(KindDevice, device), FreezeUser: Freeze(KindUser, user),
		FreezeWindowDevice: FreezeWindow(KindDevice, device), FreezeWindowUser: FreezeWindow(KindUser, user),
		ShadowRejections: ShadowRejections(campaign), RiskIndex: RiskIndex, PartnerQuotas: PartnerQuotas(campaign),
		Pushes: Pushes(campaign), CodePool: CodePool(campaign, sku)}
}

// PointsPrices is a points_item campaign's prices, in the campaign's slot: field
// "kind" = "points_item" and one field "s:<sku>" per SKU with its price in points.
// Written by the catalog before warm.lua and by recovery before rebuild.lua, so a
// campaign the gateway can route has its prices; absent for a voucher campaign.
func PointsPrices(campaign string) string { return "fg:{" + campaign + "}:pprice" }

// PointsHolds indexes a points_item campaign's claims whose points are held, in the
// campaign's slot: field "<request_id>\t<user>" = the ms of the last attempt. The
// gateway writes it before it reserves; the settler's points sweep resolves what is
// older than its grace (DESIGN.md "Points: the cross-slot step").
func PointsHolds(campaign string) string { return "fg:{" + campaign + "}:pholds" }

// PointsReservation is the id of a points_item claim's reservation in its user's hot
// balance (internal/points): the claim's identity, "<campaign>:<request_id>".
func PointsReservation(campaign, requestID string) string { return campaign + ":" + requestID }

// PointsHoldField is a claim's field in its campaign's holds index (ids never hold a
// tab); ParsePointsHoldField splits it.
func PointsHoldField(requestID, user string) string { return requestID + "\t" + user }

// ParsePointsHoldField returns the request_id and user of a holds-index field.
func ParsePointsHoldField(f string) (requestID, user string, ok bool) {
	for i := 0; i < len(f); i++ {
		if f[i] == '\t' {
			return f[:i], f[i+1:], i > 0 && i < len(f)-1
		}
	}
	return "", "", false
}

// PointsGains is a user's recent gains, in the user's slot: a sorted set of
// "<grant_id>:<amount>" by Redis time, the window of the auto-freeze rule
// (points.max in points.window), expiring with it.
func PointsGains(user string) string { return "fg:{u:" + user + "}:gains" }
