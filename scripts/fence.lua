-- fence.lua: stop a business line's campaigns from accepting claims while their
-- counters are rebuilt after a Redis loss (internal/recovery).
--
-- KEYS: recovery lock, business line, then the meta key of each campaign to rebuild
-- ARGV: token (unique per recovery run), lock ttl ms
-- returns: 1 fenced (this run holds the lock), 0 another recovery holds the lock
--
-- The fence is the business line's "budget" field: claim.lua answers NOT_WARM (503,
-- nothing taken, nothing remembered) when it is missing, so a retry with the same
-- request_id is decided afresh once the rebuild restores it. Each campaign's meta also
-- gets "recovering" = token, which stops release.lua and tells GET /admin/v1/campaigns
-- why claims are refused. A meta key that was lost is created with that field only; the
-- claim script reads no "bl" from it and answers NOT_WARM (503) without taking anything,
-- and the gateway's route sees the token and answers 503 too, until the rebuild writes
-- the whole campaign back.
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) == false then
  if redis.call('GET', KEYS[1]) ~= ARGV[1] then
    return 0
  end
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
redis.call('HDEL', KEYS[2], 'budget')
for i = 3, #KEYS do
  redis.call('HSET', KEYS[i], 'recovering', ARGV[1])
end
return 1
