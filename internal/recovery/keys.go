package recovery

import "github.com/flashgate/flashgate/internal/rkeys"

// Key names of the settlement side (issue 5). They follow internal/rkeys' layout - the
// campaign's hash tag, a fixed prefix per kind - and belong there; they live here until
// the lead moves them, so that the expirer, reconciliation and recovery build them in
// one place.

// Released is the set of a campaign's claim ids whose value release.lua has given back
// (budget recovery on expiry): the once-only guard of that release.
func Released(campaign string) string { return "fg:" + rkeys.Tag(campaign) + ":released" }

// ServerRunID holds the run id of the Redis server the whole keyspace was last checked
// on. A different value means Redis restarted (or was replaced) since: every campaign in
// the books is then checked, not only those in rkeys.Campaigns (which may be lost too).
const ServerRunID = "fg:runid"

// Lock is the recovery lock of a business line. It carries the business line's tag, so
// it lives in the same slot as the business line's budget hash it fences.
func Lock(businessLine string) string { return "fg:recover:" + rkeys.Tag(businessLine) }

// usersRebuild and releasedRebuild are the copies a rebuild loads before rebuild.lua
// swaps them in; they carry the campaign's tag.
func usersRebuild(campaign string) string { return "fg:" + rkeys.Tag(campaign) + ":rebuild:uc" }
func releasedRebuild(campaign string) string {
	return "fg:" + rkeys.Tag(campaign) + ":rebuild:released"
}

// Fields this package and release.lua add to rkeys' hashes.
const (
	// FieldRunID (campaign meta) is the run id of the Redis server whose counters are
	// known good for the campaign: set when first seen (or by warm, once wired) and by
	// every rebuild. A different run id means Redis restarted since.
	FieldRunID = "rid"
	// FieldRecovering (campaign meta) holds the token of the recovery rebuilding it.
	FieldRecovering = "recovering"
	// FieldReleased (campaign meta, business line) is the value given back so far.
	FieldReleased = "released"
	// FieldRecycled (SKU) is how many units expiry put back on sale.
	FieldRecycled = "recycled"
)
