-- push.lua: hold or release a push's escrow in the campaign's slot (DESIGN.md "Push").
--
-- KEYS: 1 meta, 2 the campaign's push escrows (fg:{c}:push), then one SKU hash per SKU
--       of the push (all carry the campaign's tag: one slot)
-- ARGV: 1 mode ('hold' or 'release'), 2 push_id, 3 nsku, then per SKU: sku, units
-- returns: {1, amount} held (or already held: amount is what is still held), or
--          released (or nothing to release);
--          {2, reason[, sku]} refused, nothing taken: reason is paused, not_started,
--          ended, unknown_sku, sold_out (sku: the SKU whose free stock is short) or
--          budget_exhausted (the campaign's free budget is short);
--          {3} the campaign is not warm or being rebuilt (retry);
--          {4} the push's escrow was released already (it is over)
--
-- hold checks the free stock of every SKU (stock - held) and the campaign's free budget
-- (budget - spent - held) against the whole push and, only if all of it fits, holds it:
-- SKU held += units, meta held += amount (units x the SKU's value, read here, never
-- from the caller), and the escrow fields st:<push> = 1, b:<push> = amount,
-- u:<push>:<sku> = units. claim.lua lets other claims use only what is not held and
-- lets the push's own claims take from the escrow; release gives back what is left.
local meta, pushes = KEYS[1], KEYS[2]
local mode, push = ARGV[1], ARGV[2]

-- rebuild (internal/recovery, after a Redis loss, while the campaign is fenced): write
-- every escrow back from the books. KEYS: meta, escrows, then one SKU hash per SKU of
-- the campaign. ARGV: 'rebuild', the recovery token, nsku, the nsku SKU ids, npush, then
-- per push: push_id, st (1 running, 2 over), amount, and nsku units (in the SKUs'
-- order). Sets each SKU's held and the meta's held to the sum over running pushes.
-- Returns {1, held amount}, or {3} when this recovery no longer holds the fence.
if mode == 'rebuild' then
  if redis.call('HGET', meta, 'recovering') ~= ARGV[2] then return {3} end
  local n = tonumber(ARGV[3])
  local held, total = {}, 0
  for i = 1, n do held[i] = 0 end
  redis.call('DEL', pushes)
  local a = 4 + n
  local np = tonumber(ARGV[a])
  a = a + 1
  for _ = 1, np do
    local id, st, amount = ARGV[a], ARGV[a + 1], tonumber(ARGV[a + 2])
    redis.call('HSET', pushes, 'st:' .. id, st, 'b:' .. id, amount)
    for i = 1, n do
      local u = tonumber(ARGV[a + 2 + i])
      redis.call('HSET', pushes, 'u:' .. id .. ':' .. ARGV[3 + i], u)
      held[i] = held[i] + u
    end
    total = total + amount
    a = a + 3 + n
  end
  for i = 1, n do redis.call('HSET', KEYS[2 + i], 'held', held[i]) end
  redis.call('HSET', meta, 'held', total)
  return {1, total}
end

local nsku = tonumber(ARGV[3])
local st = redis.call('HGET', pushes, 'st:' .. push)

if mode == 'release' then
  if st ~= '1' then return {1, 0} end
  local left = tonumber(redis.call('HGET', pushes, 'b:' .. push) or '0')
  -- (never HINCRBY by -0: Lua writes it "-0", which Redis refuses as an integer)
  if left ~= 0 then redis.call('HINCRBY', meta, 'held', -left) end
  for i = 1, nsku do
    local sku = ARGV[2 + 2 * i]
    local f = 'u:' .. push .. ':' .. sku
    local u = tonumber(redis.call('HGET', pushes, f) or '0')
    if u ~= 0 then redis.call('HINCRBY', KEYS[2 + i], 'held', -u) end
    redis.call('HSET', pushes, f, 0)
  end
  redis.call('HSET', pushes, 'st:' .. push, 2, 'b:' .. push, 0)
  -- Units not used are on sale again: gateways forget a sold_out they concluded.
  redis.call('PUBLISH', 'fg:changes', meta)
  return {1, left}
end

if st == '1' then
  return {1, tonumber(redis.call('HGET', pushes, 'b:' .. push) or '0')}
end
if st == '2' then return {4} end

local m = redis.call('HMGET', meta, 'bl', 'budget', 'spent', 'held', 'paused', 'starts', 'ends', 'recovering')
if not m[1] or m[8] then return {3} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if m[5] == '1' then return {2, 'paused'} end
if now < tonumber(m[6]) then return {2, 'not_started'} end
if now >= tonumber(m[7]) then return {2, 'ended'} end

local amount = 0
local want = {}
for i = 1, nsku do
  local sku, units = ARGV[2 + 2 * i], tonumber(ARGV[3 + 2 * i])
  local s = redis.call('HMGET', KEYS[2 + i], 'stock', 'held', 'value')
  if not s[1] then return {2, 'unknown_sku', sku} end
  if tonumber(s[1]) - (tonumber(s[2]) or 0) < units then
    return {2, 'sold_out', sku}
  end
  amount = amount + units * tonumber(s[3])
  want[i] = units
end
if tonumber(m[3] or '0') + tonumber(m[4] or '0') + amount > tonumber(m[2]) then
  return {2, 'budget_exhausted'}
end

for i = 1, nsku do
  redis.call('HINCRBY', KEYS[2 + i], 'held', want[i])
  redis.call('HSET', pushes, 'u:' .. push .. ':' .. ARGV[2 + 2 * i], want[i])
end
redis.call('HINCRBY', meta, 'held', amount)
redis.call('HSET', pushes, 'st:' .. push, 1, 'b:' .. push, amount)
return {1, amount}
