-- release.lua: give the face value of expired vouchers back to their campaign and
-- business-line budgets (budget recovery), exactly once per claim, and optionally put
-- the stock back on sale (the campaign's recycle_stock setting).
--
-- KEYS: meta, business line, released set, then one SKU key per claim
-- ARGV: recycle (0/1), then per claim: claim_id, value
-- returns: -1 fenced: the campaign is being rebuilt after a Redis loss (meta has a
--             "recovering" token or the business line has no budget) or its keys are
--             missing; nothing was done and the expirer leaves the claims for later
--          -2 stale: the business-line key is not the campaign's
--          otherwise one integer per claim: 1 released now, 0 already released
--
-- The released set is the once-only guard: a claim id enters it in the same atomic step
-- that gives its value back, so a second expirer, a retry after a crash, or a retry after
-- a lost reply finds it there and changes nothing. The settler's expirer applies this
-- before it commits the claim's "expired" state and ledger "release" row in Postgres,
-- inside the transaction that holds the claim rows locked: see settler/expire.
--
-- Counters: meta and business line keep "spent" (net of releases) and "released" (the
-- running total given back), so spent + released is everything ever reserved; the SKU
-- keeps "recycled" (units put back on sale) so stock = total - taken + recycled.
--
-- A unit put back on sale is announced: the campaign's meta key is published on
-- fg:changes (rkeys.Changes) so every gateway stops answering sold_out locally for it.

local m = redis.call('HMGET', KEYS[1], 'bl', 'recovering')
if not m[1] or (m[2] and m[2] ~= '') then
  return -1
end
if KEYS[2] ~= 'fg:bl:{' .. m[1] .. '}' then
  return -2
end
if redis.call('HEXISTS', KEYS[2], 'budget') == 0 then
  return -1
end
local recycle = ARGV[1] == '1'
local out = {}
local recycled = false
for i = 1, #KEYS - 3 do
  local cid, v = ARGV[2 * i], tonumber(ARGV[2 * i + 1])
  if redis.call('SADD', KEYS[3], cid) == 1 then
    redis.call('HINCRBY', KEYS[1], 'spent', -v)
    redis.call('HINCRBY', KEYS[1], 'released', v)
    redis.call('HINCRBY', KEYS[2], 'spent', -v)
    redis.call('HINCRBY', KEYS[2], 'released', v)
    if recycle then
      redis.call('HINCRBY', KEYS[3 + i], 'stock', 1)
      redis.call('HINCRBY', KEYS[3 + i], 'recycled', 1)
      recycled = true
    end
    out[i] = 1
  else
    out[i] = 0
  end
end
if recycled then
  redis.call('PUBLISH', 'fg:changes', KEYS[1])
end
return out
