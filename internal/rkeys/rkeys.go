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
