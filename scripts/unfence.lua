-- unfence.lua: the last step of a rebuild after a Redis loss: write the business line's
-- budget and rebuilt totals back, which lets its campaigns accept claims again, and drop
-- the recovery lock.
--
-- KEYS: recovery lock, business line
-- ARGV: token, budget (unless budget_next is set: see budget.lua), spent, released
-- returns: 1 done, 0 this run no longer holds the lock (nothing written: the run that
--          holds it finishes the job)
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
-- A budget set by the admin API while the fence held (budget.lua) wins over the one the
-- recovery read from Postgres.
local budget = redis.call('HGET', KEYS[2], 'budget_next') or ARGV[2]
redis.call('HDEL', KEYS[2], 'budget_next')
redis.call('HSET', KEYS[2], 'budget', budget, 'spent', ARGV[3], 'released', ARGV[4])
redis.call('DEL', KEYS[1])
return 1
