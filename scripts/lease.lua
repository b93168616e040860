-- lease.lua: extend or drop a recovery lock, only if this run still holds it.
--
-- KEYS: recovery lock
-- ARGV: token, ttl ms (0: drop the lock)
-- returns: 1 done, 0 the lock is another run's (or gone)
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
if tonumber(ARGV[2]) == 0 then
  redis.call('DEL', KEYS[1])
else
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 1
