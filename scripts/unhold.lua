-- unhold.lua: remove one claim's entry from a points_item campaign's holds index
-- (rkeys.PointsHolds, DESIGN.md "Points: the cross-slot step") if it is still the given
-- attempt's: a later attempt of the same request_id re-wrote it and owns it now.
-- KEYS: 1 the holds index. ARGV: 1 the field (<request_id>\t<user>), 2 the value the
-- caller wrote or read (<ms>:<token>). Returns 1 removed, 0 not (gone, or another's).
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
