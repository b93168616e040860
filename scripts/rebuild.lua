-- rebuild.lua: write one campaign's live counters back from the books after a Redis loss
-- (internal/recovery), atomically, while the campaign's business line is fenced.
--
-- KEYS: meta, SKU set, users, users (rebuilt copy), released set, released set (rebuilt
--       copy), the set of campaigns, inflight, then one key per SKU, then one request
--       key per in-flight claim
-- ARGV: token, campaign id, Redis run id,
--       bl, starts, ends, limit, budget, ttl, paused, seg       (the campaign from Postgres)
--       rows, rows_value, released                              (its claims and releases)
--       nsku, then per SKU: sku, total, value, rows, recycled
--       ninf, then per in-flight claim: claim_id, sku, value, user
-- returns: -1 this run no longer holds the campaign (another recovery took over: nothing
--          written), otherwise {taken, spent, inflight kept, inflight value kept,
--          inflight dropped}
--
-- "In flight" is an outbox entry whose claim is not a row yet. The Go side read them
-- before Postgres; a gateway may have voided one since (its produce failed), so each is
-- checked again here against its idempotency record: a voided claim is not counted. One
-- whose record is gone is counted: it was accepted, and the settler writes such claims
-- (confirm.lua answers "no trace: write"). Per-user counts and the released set were
-- loaded by the Go side into the rebuilt copies; this script adds the in-flight users and
-- swaps the copies in. A voided claim's inflight entry is dropped (void.lua drops it too;
-- this only matters if that write was lost).
--
-- Rebuilt counters may put stock back on sale (or change the window): the campaign's
-- meta key is published on fg:changes (rkeys.Changes) so gateways forget what they
-- concluded about the campaign.
--
-- The idempotency record (fg:{c}:rq:<id>, "X\tclaim\tvalue\t...") has its Go owner in
-- internal/claim/idem.go, which documents its layout; keep the two in step.

local meta, skus, users, usersNew, released, releasedNew, campaigns, inflight =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local K = 8
local token = ARGV[1]
if redis.call('HGET', meta, 'recovering') ~= token then
  return -1
end

local nsku = tonumber(ARGV[15])
local a = 15
local skuIndex, skuTaken = {}, {}
for i = 1, nsku do
  skuIndex[ARGV[a + 1]] = i
  skuTaken[i] = tonumber(ARGV[a + 4])
  a = a + 5
end

local ninf = tonumber(ARGV[a + 1])
local b = a + 1
local kept, keptValue, dropped = 0, 0, 0
for i = 1, ninf do
  local cid, sku, value, user = ARGV[b + 1], ARGV[b + 2], tonumber(ARGV[b + 3]), ARGV[b + 4]
  b = b + 4
  local keep = true
  local rec = redis.call('GET', KEYS[K + nsku + i])
  if rec then
    local st, pc = string.match(rec, '^(%a)\t([^\t]*)\t')
    if pc ~= cid or st == 'V' or st == 'R' then
      keep = false
    end
  end
  if keep then
    kept = kept + 1
    keptValue = keptValue + value
    local j = skuIndex[sku]
    if j then
      skuTaken[j] = skuTaken[j] + 1
    end
    redis.call('HINCRBY', usersNew, user, 1)
  else
    dropped = dropped + 1
    redis.call('HDEL', inflight, cid)
  end
end

redis.call('DEL', skus)
a = 15
for i = 1, nsku do
  local sku, total, value, recycled = ARGV[a + 1], tonumber(ARGV[a + 2]), ARGV[a + 3], tonumber(ARGV[a + 5])
  local taken = skuTaken[i]
  redis.call('HSET', KEYS[K + i], 'stock', total - taken + recycled, 'value', value, 'total', total,
    'taken', taken, 'recycled', recycled)
  redis.call('SADD', skus, sku)
  a = a + 5
end

local taken = tonumber(ARGV[12]) + kept
local spent = tonumber(ARGV[13]) - tonumber(ARGV[14]) + keptValue
redis.call('HSET', meta, 'bl', ARGV[4], 'starts', ARGV[5], 'ends', ARGV[6], 'limit', ARGV[7],
  'budget', ARGV[8], 'ttl', ARGV[9], 'paused', ARGV[10], 'seg', ARGV[11],
  'spent', spent, 'taken', taken, 'released', ARGV[14], 'rid', ARGV[3])
redis.call('HDEL', meta, 'recovering')

if redis.call('EXISTS', usersNew) == 1 then
  redis.call('RENAME', usersNew, users)
else
  redis.call('DEL', users)
end
if redis.call('EXISTS', releasedNew) == 1 then
  redis.call('RENAME', releasedNew, released)
else
  redis.call('DEL', released)
end
redis.call('SADD', campaigns, ARGV[2])
redis.call('PUBLISH', 'fg:changes', meta)
return {taken, spent, kept, keptValue, dropped}
