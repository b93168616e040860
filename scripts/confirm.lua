-- confirm.lua: the settler claims a batch of records read from Kafka before it writes
-- them to Postgres.
--
-- KEYS: one request key per claim
-- ARGV: one claim_id per claim
-- returns per claim: 1 write it (now or already confirmed), 0 skip it (voided, or the
--                    request_id now belongs to another claim), 2 write it (no record:
--                    the idempotency record expired or Redis lost it; the claim was
--                    accepted once, so it is written — see DESIGN.md)
local out = {}
for i = 1, #KEYS do
  local prev = redis.call('GET', KEYS[i])
  if not prev then
    out[i] = 2
  else
    local st, pc, rest = string.match(prev, '^(%a)\t([^\t]*)\t(.*)$')
    if pc ~= ARGV[i] or st == 'V' or st == 'R' then
      out[i] = 0
    else
      if st == 'A' or st == 'D' then
        redis.call('SET', KEYS[i], 'S\t' .. pc .. '\t' .. rest, 'KEEPTTL')
      end
      out[i] = 1
    end
  end
end
return out
