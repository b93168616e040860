-- warm.lua: write a campaign's definition into Redis (gateway/catalog), atomically and
-- by the Redis clock - the clock claim.lua decides by - so that no admin call, at any
-- moment, can make a stock or a budget give out more than it holds (issue 21.1).
--
-- KEYS: 1 meta, 2 SKU set, then one key per SKU of the new definition, then one key per
--       SKU to remove (in the set now, not in the new definition). All carry the
--       campaign's tag: one slot.
-- ARGV: 1 Redis run id, 2 bl, 3 starts, 4 ends, 5 limit, 6 budget, 7 ttl, 8 paused,
--       9 seg, 10 starts of the stored definition in Postgres (ms; 0: a new campaign),
--       11 the first field that may not change once the campaign has started and that
--       this definition changes ("" when none), 12 nsku, then per SKU: sku, total,
--       value; then nold, then per SKU to remove: its id; then the campaign's kind and
--       its odds (meta fields "kind" and "odds": internal/catalog/lottery.go OddsField,
--       "" when not a lottery)
-- returns: {1} warmed; {2, field} refused: the campaign has started and field may not
--          change any more; {3} refused: the campaign is being rebuilt after a Redis
--          loss, or its counters here cannot be trusted (recovery rebuilds them); {4}
--          the SKU set changed since the caller read it (read it again and retry);
--          {5, i, out} refused: SKU i (0-based) would get a stock below the out units
--          it has given out
--
-- What is never reset: a SKU's taken and recycled, the campaign's spent and taken. The
-- stock left is computed, total - taken + recycled (a total below taken - recycled is
-- refused), so raising or
-- lowering a stock at any moment gives out exactly the new total at most. "Started" is
-- decided here, by TIME against the starts the claims see (the live meta), not by the
-- caller's clock.
local meta, skuset = KEYS[1], KEYS[2]
local nsku = tonumber(ARGV[12])
local nold = tonumber(ARGV[13 + 3 * nsku])

local live = redis.call('HMGET', meta, 'starts', 'recovering', 'rid')
if live[2] then
  return {3}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local started
if live[1] then
  started = now >= tonumber(live[1])
  if started and live[3] and live[3] ~= ARGV[1] then
    -- Redis restarted since these counters were known good: they may be behind what
    -- was taken. The recoverer rebuilds them from the books first.
    return {3}
  end
else
  local prev = tonumber(ARGV[10])
  started = prev > 0 and now >= prev
  if started then
    -- Postgres has a started campaign whose state this Redis lost: what was taken is
    -- in the books, not here. The recoverer rebuilds it.
    return {3}
  end
end
if started and ARGV[11] ~= '' then
  return {2, ARGV[11]}
end

-- Every SKU in the set must be named by the caller (kept or removed).
local named = {}
local a = 12
for i = 1, nsku do
  named[ARGV[a + 1]] = true
  a = a + 3
end
for i = 1, nold do
  named[ARGV[a + 1 + i]] = true
end
for _, s in ipairs(redis.call('SMEMBERS', skuset)) do
  if not named[s] then
    return {4}
  end
end

-- A stock may not go below what its SKU has given out (taken - recycled): the units
-- left would be negative, and a later void would then put a unit on sale beyond the
-- total.
local b = 12
for i = 1, nsku do
  local h = redis.call('HMGET', KEYS[2 + i], 'taken', 'recycled')
  local out = (tonumber(h[1]) or 0) - (tonumber(h[2]) or 0)
  if tonumber(ARGV[b + 2]) < out then
    return {5, i - 1, out}
  end
  b = b + 3
end

for i = 1, nold do
  redis.call('DEL', KEYS[2 + nsku + i])
  redis.call('SREM', skuset, ARGV[a + 1 + i])
end
redis.call('HSET', meta, 'bl', ARGV[2], 'starts', ARGV[3], 'ends', ARGV[4], 'limit', ARGV[5],
  'budget', ARGV[6], 'ttl', ARGV[7], 'paused', ARGV[8], 'seg', ARGV[9])
redis.call('HSETNX', meta, 'spent', 0)
redis.call('HSETNX', meta, 'taken', 0)
-- The run id stamp tells internal/recovery these counters are good on this server. Set
-- only if absent: a re-warm on a restarted server must not vouch for counters it may
-- have lost.
redis.call('HSETNX', meta, 'rid', ARGV[1])
-- The kind and a lottery's odds (DESIGN.md "Lottery"): claim.lua draws by them. Odds
-- that differ once started were refused above (ARGV[11] names the weight).
local kind, oddsf = ARGV[14 + 3 * nsku + nold], ARGV[15 + 3 * nsku + nold]
if kind and kind ~= '' then
  redis.call('HSET', meta, 'kind', kind)
end
if oddsf and oddsf ~= '' then
  redis.call('HSET', meta, 'odds', oddsf)
else
  redis.call('HDEL', meta, 'odds')
end
a = 12
for i = 1, nsku do
  local k = KEYS[2 + i]
  local total = tonumber(ARGV[a + 2])
  local h = redis.call('HMGET', k, 'taken', 'recycled')
  local taken, recycled = tonumber(h[1]) or 0, tonumber(h[2]) or 0
  local stock = total - taken + recycled
  redis.call('HSET', k, 'stock', stock, 'value', ARGV[a + 3], 'total', total, 'taken', taken)
  redis.call('SADD', skuset, ARGV[a + 1])
  a = a + 3
end
-- Stock and window may have changed: gateways forget what they concluded.
redis.call('PUBLISH', 'fg:changes', meta)
return {1}
