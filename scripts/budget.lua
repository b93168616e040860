-- budget.lua: set a business line's total budget (gateway/catalog), without lifting a
-- recovery fence (issue 21).
--
-- KEYS: business line, its recovery lock (same tag: one slot)
-- ARGV: budget
-- returns: 1 set; 0 the business line is fenced by a recovery: the budget is kept in
--          "budget_next" and unfence.lua writes it when the rebuild ends
--
-- The fence is the absence of the "budget" field (claim.lua answers NOT_WARM without
-- it), so writing "budget" while a recovery holds the lock would let claims be decided
-- on counters not yet rebuilt.
if redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('HSET', KEYS[1], 'budget_next', ARGV[1])
  return 0
end
redis.call('HSET', KEYS[1], 'budget', ARGV[1])
redis.call('HSETNX', KEYS[1], 'spent', 0)
redis.call('HDEL', KEYS[1], 'budget_next')
return 1
