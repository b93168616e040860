-- unfence.lua: the last step of a rebuild after a Redis loss: write the business line's
-- budget and rebuilt totals back, which lets its campaigns accept claims again, and drop
-- the recovery lock.
--
-- KEYS: recovery lock, business line
-- ARGV: token, budget, spent, released
-- returns: 1 done, 0 this run no longer holds the lock (nothing written: the run that
--          holds it finishes the job)
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[2], 'budget', ARGV[2], 'spent', ARGV[3], 'released', ARGV[4])
redis.call('DEL', KEYS[1])
return 1
