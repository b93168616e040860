-- durable.lua: after the broker acknowledged a batch of claims, mark their records
-- A -> D, so a retry of the same request_id is answered 200 at once and void.lua can
-- never give back a claim that is already in Kafka.
--
-- KEYS: one request key per claim; ARGV: one claim_id per claim.
-- Records in any other state (S: the settler was faster; V; gone) are left alone.
local n = 0
for i = 1, #KEYS do
  local prev = redis.call('GET', KEYS[i])
  if prev then
    local st, pc, rest = string.match(prev, '^(%a)\t([^\t]*)\t(.*)$')
    if st == 'A' and pc == ARGV[i] then
      redis.call('SET', KEYS[i], 'D\t' .. pc .. '\t' .. rest, 'KEEPTTL')
      n = n + 1
    end
  end
end
return n
