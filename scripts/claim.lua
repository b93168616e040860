-- claim.lua: decide a batch of claims atomically.
--
-- Each claim takes K=9 consecutive KEYS and A=7 consecutive ARGV after the 3 header
-- arguments, and yields R=8 consecutive results. The Go side (gateway/claimer) builds the
-- same layout; the code numbers are mapped to reasons in exactly one Go table.
--
-- KEYS per claim: meta, sku, request, users, business line, outbox, inflight,
--                 rejections, segment (the meta key again when the campaign has none)
-- ARGV header:    n, accept_grace_ms, reject_ttl_ms
-- ARGV per claim: request_id, claim_id, campaign_id, sku, user_id, device_id, ip
-- result per claim: code, replayed (0/1), claim_id, value, claimed_ms, expires_ms,
--                   outbox_id, retry_after_ms
--
-- Times come from the Redis clock (TIME) so every gateway agrees on the window.

local K, A = 9, 7
local ACCEPTED = 1
local SOLD_OUT, BUDGET_EXHAUSTED, USER_LIMIT, NOT_STARTED, ENDED, PAUSED, NOT_ELIGIBLE = 10, 11, 12, 13, 14, 15, 16
local UNKNOWN_CAMPAIGN, UNKNOWN_SKU, KEY_REUSE = 40, 41, 42
local STALE, NOT_WARM, IN_FLIGHT = 50, 51, 52

local n = tonumber(ARGV[1])
local grace = tonumber(ARGV[2])
local rejttl = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local out = {}

-- A stored answer is "X\tclaim\tvalue\tclaimed\texpires\toutbox\tsku\tuser\tdevice" where
-- X is A (accepted, produce not yet acknowledged), D (durable: the broker acknowledged
-- it), S (settled: the settler confirmed it), V (voided by compensation) or R (rejected;
-- claim holds the code). The trailing sku/user/device is the request's
-- fingerprint: the same request_id with a different fingerprint is a key reuse.
local function parse(rec)
  return string.match(rec, '^(%a)\t([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\t]*)\t(.*)$')
end

local function reject(k, code, fp, store)
  redis.call('HINCRBY', KEYS[k + 8], code, 1)
  if store then
    redis.call('SET', KEYS[k + 3], 'R\t' .. code .. '\t\t\t\t\t' .. fp, 'PX', rejttl)
  end
  return code
end

local function decide(i)
  local k = (i - 1) * K
  local a = 3 + (i - 1) * A
  local reqid, claimid, sku, user, dev, ip =
    ARGV[a + 1], ARGV[a + 2], ARGV[a + 4], ARGV[a + 5], ARGV[a + 6], ARGV[a + 7]
  local fp = sku .. '\t' .. user .. '\t' .. dev

  local prev = redis.call('GET', KEYS[k + 3])
  if prev then
    local st, pc, pv, pcl, pe, po, pfp = parse(prev)
    if st ~= 'V' then
      if pfp ~= fp then
        return KEY_REUSE, 0, '', 0, 0, 0, ''
      end
      if st == 'R' then
        return tonumber(pc), 1, '', 0, 0, 0, ''
      end
      if st == 'A' then
        -- The first attempt is still being made durable (or its gateway died and the
        -- outbox relay will publish it). Answering 200 now could promise a claim that
        -- is about to be voided, so the retry is told to come back.
        return IN_FLIGHT, 1, pc, 0, 0, 0, ''
      end
      return ACCEPTED, 1, pc, tonumber(pv), tonumber(pcl), tonumber(pe), po
    end
    -- A voided claim (its produce failed and was compensated) is decided anew.
  end

  local m = redis.call('HMGET', KEYS[k + 1], 'bl', 'starts', 'ends', 'limit', 'budget', 'spent', 'paused', 'seg', 'ttl')
  if not m[1] then
    return UNKNOWN_CAMPAIGN, 0, '', 0, 0, 0, ''
  end
  -- The gateway routes the business-line and segment keys from a cached copy of the
  -- campaign; if that copy is stale the script refuses rather than touch the wrong key.
  if KEYS[k + 5] ~= 'fg:bl:{' .. m[1] .. '}' then
    return STALE, 0, '', 0, 0, 0, ''
  end
  local seg = m[8] or ''
  if seg ~= '' and KEYS[k + 9] ~= 'fg:seg:{' .. seg .. '}' then
    return STALE, 0, '', 0, 0, 0, ''
  end
  local s = redis.call('HMGET', KEYS[k + 2], 'stock', 'value')
  if not s[1] then
    return UNKNOWN_SKU, 0, '', 0, 0, 0, ''
  end

  if m[7] == '1' then
    return reject(k, PAUSED, fp, true), 0, '', 0, 0, 0, ''
  end
  local ends = tonumber(m[3])
  if now < tonumber(m[2]) then
    return reject(k, NOT_STARTED, fp, true), 0, '', 0, 0, 0, ''
  end
  if now >= ends then
    return reject(k, ENDED, fp, true), 0, '', 0, 0, 0, ''
  end
  if seg ~= '' and redis.call('SISMEMBER', KEYS[k + 9], user) == 0 then
    return reject(k, NOT_ELIGIBLE, fp, true), 0, '', 0, 0, 0, ''
  end
  local used = tonumber(redis.call('HGET', KEYS[k + 4], user) or '0')
  if used >= tonumber(m[4]) then
    return reject(k, USER_LIMIT, fp, true), 0, '', 0, 0, 0, ''
  end
  if tonumber(s[1]) <= 0 then
    return reject(k, SOLD_OUT, fp, true), 0, '', 0, 0, 0, ''
  end
  local value = tonumber(s[2])
  if tonumber(m[6]) + value > tonumber(m[5]) then
    return reject(k, BUDGET_EXHAUSTED, fp, true), 0, '', 0, 0, 0, ''
  end
  local b = redis.call('HMGET', KEYS[k + 5], 'budget', 'spent')
  if not b[1] then
    return NOT_WARM, 0, '', 0, 0, 0, ''
  end
  if tonumber(b[2] or '0') + value > tonumber(b[1]) then
    return reject(k, BUDGET_EXHAUSTED, fp, true), 0, '', 0, 0, 0, ''
  end

  redis.call('HINCRBY', KEYS[k + 2], 'stock', -1)
  redis.call('HINCRBY', KEYS[k + 2], 'taken', 1)
  redis.call('HINCRBY', KEYS[k + 1], 'spent', value)
  redis.call('HINCRBY', KEYS[k + 1], 'taken', 1)
  redis.call('HINCRBY', KEYS[k + 5], 'spent', value)
  redis.call('HINCRBY', KEYS[k + 4], user, 1)
  local expires = now + tonumber(m[9])
  local oid = redis.call('XADD', KEYS[k + 6], '*',
    'c', claimid, 'r', reqid, 's', sku, 'u', user, 'd', dev, 'i', ip,
    'v', value, 't', now, 'e', expires, 'b', m[1])
  redis.call('HSET', KEYS[k + 7], claimid, reqid)
  local keep = ends - now
  if keep < 0 then keep = 0 end
  redis.call('SET', KEYS[k + 3],
    'A\t' .. claimid .. '\t' .. value .. '\t' .. now .. '\t' .. expires .. '\t' .. oid .. '\t' .. fp,
    'PX', keep + grace)
  return ACCEPTED, 0, claimid, value, now, expires, oid
end

for i = 1, n do
  local code, replayed, cid, value, claimed, expires, oid = decide(i)
  local j = (i - 1) * 8
  out[j + 1] = code
  out[j + 2] = replayed
  out[j + 3] = cid
  out[j + 4] = value
  out[j + 5] = claimed
  out[j + 6] = expires
  out[j + 7] = oid
  out[j + 8] = 0
end
return out
