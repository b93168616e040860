-- void.lua: compensate one accepted claim whose produce to Kafka failed.
--
-- KEYS: meta, sku, request, users, business line, outbox, inflight[, partner quotas[,
--       push escrows, the SKU's code pool]]
-- ARGV: claim_id, user_id[, channel]  (a 'partner:<id>' channel gives one back to that
--       partner's quota in KEYS[8]; once, like the rest, because only state A is voided;
--       a 'push:<id>' channel gives the unit and value back to that push's escrow in
--       KEYS[9] while the escrow is held, and a partner code the claim took goes back
--       to the pool in KEYS[10]: DESIGN.md "Push", "Partner code pools")
-- returns: 1 voided now (everything it took is given back), 2 already voided,
--          3 durable (marked D after a broker ack, or S: the settler already read it
--            from Kafka; either way it will be a row, so answer 200),
--          0 gone (no record for this claim: nothing to give back)
--
-- The settler's confirm.lua and this script both run on Redis, so exactly one of them
-- wins for a claim: either the settler confirms it (and it will be a row) or this voids
-- it (and the settler skips it if the produce did in fact reach Kafka). That is what
-- makes a timed-out produce safe to compensate. The amounts given back are read from the
-- stored record, never taken from the caller.
--
-- A unit given back is on sale again: the script publishes the campaign's meta key on
-- fg:changes (rkeys.Changes) so every gateway stops answering sold_out locally for it.
--
-- The idempotency record (fg:{c}:rq:<id>, "X\tclaim\tvalue\t...") has its Go owner in
-- internal/claim/idem.go, which documents its layout; keep the two in step.

local prev = redis.call('GET', KEYS[3])
if not prev then return 0 end
local st, pc, pv, pcl, pe, po, rest = string.match(prev, '^(%a)\t([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\t]*)\t(.*)$')
if pc ~= ARGV[1] then return 0 end
if st == 'S' or st == 'D' then return 3 end
if st == 'V' then return 2 end
if st ~= 'A' then return 0 end

local value = tonumber(pv)
-- A lottery draw that won nothing (value 0, DESIGN.md "Lottery") took only the user's
-- count (and its outbox entry): give back exactly that.
if value == 0 then
  if redis.call('HINCRBY', KEYS[4], ARGV[2], -1) <= 0 then
    redis.call('HDEL', KEYS[4], ARGV[2])
  end
  redis.call('XDEL', KEYS[6], po)
  redis.call('SET', KEYS[3], 'V\t' .. pc .. '\t' .. pv .. '\t' .. pcl .. '\t' .. pe .. '\t' .. po .. '\t' .. rest, 'KEEPTTL')
  return 1
end
redis.call('HINCRBY', KEYS[2], 'stock', 1)
redis.call('HINCRBY', KEYS[2], 'taken', -1)
redis.call('HINCRBY', KEYS[1], 'spent', -value)
redis.call('HINCRBY', KEYS[1], 'taken', -1)
redis.call('HINCRBY', KEYS[5], 'spent', -value)
local partner = ARGV[3] and string.match(ARGV[3], '^partner:(.+)$')
if partner and KEYS[8] then
  redis.call('HINCRBY', KEYS[8], 't:' .. partner, -1)
end
-- Push escrow and code pool (DESIGN.md "Push", "Partner code pools").
local push = ARGV[3] and string.match(ARGV[3], '^push:(.+)$')
if push and KEYS[9] and redis.call('HGET', KEYS[9], 'st:' .. push) == '1' then
  local sku = string.match(rest, '^([^\t]*)')
  redis.call('HINCRBY', KEYS[9], 'u:' .. push .. ':' .. sku, 1)
  redis.call('HINCRBY', KEYS[9], 'b:' .. push, value)
  redis.call('HINCRBY', KEYS[2], 'held', 1)
  redis.call('HINCRBY', KEYS[1], 'held', value)
end
if KEYS[10] then
  local e = redis.call('XRANGE', KEYS[6], po, po)
  if e[1] then
    local f = e[1][2]
    for j = 1, #f, 2 do
      if f[j] == 'k' and f[j + 1] ~= '' then
        redis.call('SADD', KEYS[10], f[j + 1])
      end
    end
  end
end
if redis.call('HINCRBY', KEYS[4], ARGV[2], -1) <= 0 then
  redis.call('HDEL', KEYS[4], ARGV[2])
end
redis.call('XDEL', KEYS[6], po)
redis.call('HDEL', KEYS[7], pc)
redis.call('SET', KEYS[3], 'V\t' .. pc .. '\t' .. pv .. '\t' .. pcl .. '\t' .. pe .. '\t' .. po .. '\t' .. rest, 'KEEPTTL')
redis.call('PUBLISH', 'fg:changes', KEYS[1])
return 1
