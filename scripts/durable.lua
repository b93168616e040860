-- durable.lua: after the broker acknowledged a batch of claims, mark their records
-- A -> D. This is the one transition that makes a claim's 200 true: the gateway answers
-- 200 only for a claim this script reports durable, and void.lua (the gateway's own on a
-- failure, or the settler's and relay's past the deadline) can never give back a D.
--
-- KEYS: one request key per claim; ARGV: one claim_id per claim.
-- returns per claim: 1 durable (marked now, or already D or S for this claim),
--                    0 not durable (voided, gone, or the request_id belongs to another
--                      claim): the gateway answers 503 and the claim is not a row.
--
-- The idempotency record (fg:{c}:rq:<id>, "X\tclaim\tvalue\t...") has its Go owner in
-- internal/claim/idem.go, which documents its layout; keep the two in step.
local out = {}
for i = 1, #KEYS do
  out[i] = 0
  local prev = redis.call('GET', KEYS[i])
  if prev then
    local st, pc, rest = string.match(prev, '^(%a)\t([^\t]*)\t(.*)$')
    if pc == ARGV[i] then
      if st == 'A' then
        redis.call('SET', KEYS[i], 'D\t' .. pc .. '\t' .. rest, 'KEEPTTL')
        out[i] = 1
      elseif st == 'D' or st == 'S' then
        out[i] = 1
      end
    end
  end
end
return out
