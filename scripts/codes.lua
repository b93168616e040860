-- codes.lua: add partner codes to a SKU's pool (DESIGN.md "Partner code pools").
--
-- KEYS: 1 the SKU hash, 2 the pool (codes not handed out), 3 every code ever added,
--       4 the campaign's meta (all carry the campaign's tag: one slot)
-- ARGV: codes
-- returns: {added, pool size}, or {-1, 0} the SKU is not in Redis (the campaign is not
--          warm), or {-2, 0} the campaign is being rebuilt after a Redis loss (retry:
--          the rebuild writes the pool from Postgres and must not race an import)
--
-- A code goes into the pool only the first time it is seen (SADD to the all-codes set
-- answers 1), so a re-import - the same file again, or a retry after a failure - never
-- puts back a code that was handed out. The SKU's "pool" flag tells claim.lua to hand
-- one out per accepted claim (an empty pool is then sold_out). Codes added put the SKU
-- back on sale: gateways forget a sold_out they concluded (fg:changes).
if redis.call('HEXISTS', KEYS[4], 'recovering') == 1 then return {-2, 0} end
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1, 0} end
local added = 0
for i = 1, #ARGV do
  if redis.call('SADD', KEYS[3], ARGV[i]) == 1 then
    redis.call('SADD', KEYS[2], ARGV[i])
    added = added + 1
  end
end
redis.call('HSET', KEYS[1], 'pool', 1)
if added > 0 then redis.call('PUBLISH', 'fg:changes', KEYS[4]) end
return {added, redis.call('SCARD', KEYS[2])}
