-- codes.lua: add partner codes to a SKU's pool (DESIGN.md "Partner code pools").
--
-- KEYS: 1 the SKU hash, 2 the pool (codes not handed out), 3 every code ever added
--       (all carry the campaign's tag: one slot)
-- ARGV: codes
-- returns: {added, pool size}
--
-- A code goes into the pool only the first time it is seen (SADD to the all-codes set
-- answers 1), so a re-import - the same file again, or a retry after a failure - never
-- puts back a code that was handed out. The SKU's "pool" flag tells claim.lua to hand
-- one out per accepted claim (an empty pool is then sold_out).
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1, 0} end
local added = 0
for i = 1, #ARGV do
  if redis.call('SADD', KEYS[3], ARGV[i]) == 1 then
    redis.call('SADD', KEYS[2], ARGV[i])
    added = added + 1
  end
end
redis.call('HSET', KEYS[1], 'pool', 1)
return {added, redis.call('SCARD', KEYS[2])}
