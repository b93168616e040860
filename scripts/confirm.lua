-- confirm.lua: the settler claims a batch of records read from Kafka before it writes
-- them to Postgres.
--
-- KEYS: one request key per claim
-- ARGV: one claim_id per claim
-- returns per claim: 1 write it (D: durable, now S; or S: already confirmed),
--                    0 skip it (voided, or the request_id now belongs to another claim),
--                    2 write it (no record: the idempotency record expired or Redis lost
--                      it; the claim was acknowledged by Kafka once, so it is written -
--                      see DESIGN.md "What is durable when"),
--                    3 undecided (A: the gateway has not marked it durable yet, nor has
--                      it been voided). The settler waits, and past the deadline voids
--                      it (void.lua); the record is never written from A: its client
--                      may have been answered 503.
--
-- The idempotency record (fg:{c}:rq:<id>, "X\tclaim\tvalue\t...") has its Go owner in
-- internal/claim/idem.go, which documents its layout; keep the two in step.
local out = {}
for i = 1, #KEYS do
  local prev = redis.call('GET', KEYS[i])
  if not prev then
    out[i] = 2
  else
    local st, pc, rest = string.match(prev, '^(%a)\t([^\t]*)\t(.*)$')
    if pc ~= ARGV[i] or st == 'V' or st == 'R' then
      out[i] = 0
    elseif st == 'A' then
      out[i] = 3
    else
      if st == 'D' then
        redis.call('SET', KEYS[i], 'S\t' .. pc .. '\t' .. rest, 'KEEPTTL')
      end
      out[i] = 1
    end
  end
end
return out
