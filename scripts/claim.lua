-- claim.lua: decide a batch of claims atomically.
--
-- Each claim takes K=26 consecutive KEYS and A=9 consecutive ARGV after the 3 header
-- arguments, and yields R=17 consecutive results. The Go side (gateway/claimer) builds the
-- same layout; the code numbers are mapped to reasons in exactly one Go table.
--
-- There is one layout: the gateway, bench and every test kit build it through
-- internal/claim (batch.go); a batch of any other shape is an error, not a guess.
--
-- KEYS per claim:  1 meta, 2 sku, 3 request, 4 users, 5 business line, 6 outbox,
--                  7 inflight, 8 rejections, 9 segment (the meta key again when the
--                  campaign has none),
--                  risk (docs/RISK.md): 10 campaign rules, 11 global rules,
--                  12-14 velocity logs of the device, IP and user in this campaign,
--                  15-17 block keys of the device, IP and user, 18-19 freeze keys of
--                  the device and user, 20-21 freeze windows of the device and user,
--                  22 shadow rejections, 23 the index of blocks and freezes,
--                  24 the campaign's partner quotas (fg:{c}:pq: field q:<partner> the
--                  quota, t:<partner> how many it has taken; DESIGN.md "Partners"),
--                  25 the campaign's push escrows (fg:{c}:push; DESIGN.md "Push"),
--                  26 the SKU's partner code pool (fg:{c}:codes:<sku>; DESIGN.md
--                  "Partner code pools")
-- ARGV header:     n, accept_grace_ms, reject_ttl_ms
-- ARGV per claim:  request_id, claim_id, campaign_id, sku, user_id, device_id, ip,
--                  channel ('' for app, 'partner:<id>', 'push:<id>'; a partner channel
--                  takes one from that partner's quota in the campaign),
--                  draw (a lottery: '<odds version>:<r>', see "Lottery draws" below;
--                  '' for any other kind)
-- result per claim: code, replayed (0/1), claim_id, value, claimed_ms, expires_ms,
--                   outbox_id, retry_after_ms, decided_ms, then what the risk rules saw:
--                   device, IP and user counts in their velocity windows, the device's
--                   and user's counts in the freeze window (-1: rule off or not
--                   evaluated), and the risk flags (F_* below), then the prize a lottery
--                   draw won ('' otherwise), then the partner code the claim took ('' none)
--
-- Times come from the Redis clock (TIME) so every gateway agrees on the window.

local ACCEPTED = 1
local NO_PRIZE = 2
local SOLD_OUT, BUDGET_EXHAUSTED, USER_LIMIT, NOT_STARTED, ENDED, PAUSED, NOT_ELIGIBLE = 10, 11, 12, 13, 14, 15, 16
local PARTNER_QUOTA = 17
local DEVICE_VELOCITY, IP_VELOCITY, USER_VELOCITY, BLOCKED = 20, 21, 22, 30
local UNKNOWN_CAMPAIGN, UNKNOWN_SKU, KEY_REUSE = 40, 41, 42
local STALE, NOT_WARM, IN_FLIGHT = 50, 51, 52
-- Decided by the gateway's points step before this script (internal/points), never here.
local INSUFFICIENT_POINTS = 60

-- Risk flags: which checks tripped (set whether or not they were enforced), whether the
-- campaign was in shadow mode (then nothing tripped was enforced), and whether this
-- claim froze its device or user (or would have, in shadow mode).
local F_BLOCKED_DEVICE, F_BLOCKED_IP, F_BLOCKED_USER, F_FROZEN_DEVICE, F_FROZEN_USER = 1, 2, 4, 8, 16
local F_DEVICE_VELOCITY, F_IP_VELOCITY, F_USER_VELOCITY = 32, 64, 128
local F_SHADOW, F_FROZE_DEVICE, F_FROZE_USER = 256, 512, 1024

local n = tonumber(ARGV[1])
local K, A, R = 26, 9, 17
if #KEYS ~= n * K then
  return redis.error_reply('claim.lua: ' .. #KEYS .. ' keys for ' .. n .. ' claims, want ' .. K .. ' per claim')
end
if #ARGV ~= 3 + n * A then
  return redis.error_reply('claim.lua: ' .. #ARGV .. ' arguments for ' .. n .. ' claims, want 3 + ' .. A .. ' per claim')
end
local grace = tonumber(ARGV[2])
local rejttl = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local out = {}

-- Is this Redis the server the campaign's counters were warmed or rebuilt on? The meta's
-- "rid" (warm.lua and recovery stamp it, rebuild.lua rewrites it) must be this server's
-- run id. A Redis restarted from an AOF older than what it acknowledged, or a replica
-- promoted by a failover, has another run id and may hold less than was acknowledged:
-- nothing is decided on it - no replay either, a record may be rolled back - until
-- recovery has rebuilt the campaign: NOT_WARM, 503, nothing taken or remembered
-- (issue 21.2). The run id is read once per call (INFO server, and only when a
-- campaign carries a stamp); a meta with no stamp (a test fixture, or a campaign not
-- yet stamped by recovery) is not checked.
local runid
local function onthisrun(m)
  local rid = m[11]
  if not rid then return true end
  if not runid then
    runid = string.match(redis.call('INFO', 'server'), 'run_id:(%x+)') or ''
  end
  return rid == runid
end

-- A stored answer is "X\tclaim\tvalue\tclaimed\texpires\toutbox\tsku\tuser\tdevice" where
-- X is A (accepted, produce not yet acknowledged), D (durable: the broker acknowledged
-- it), S (settled: the settler confirmed it), V (voided by compensation) or R (rejected;
-- claim holds the code). The trailing sku/user/device is the request's
-- fingerprint: the same request_id with a different fingerprint is a key reuse.
-- Go owner of this record: internal/claim/idem.go; of the outbox entry below (XADD):
-- internal/claim/outbox.go; of the batch layout and result codes: internal/claim
-- batch.go and code.go (code_test.go checks the codes against this file).
local function parse(rec)
  return string.match(rec, '^(%a)\t([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\t]*)\t(.*)$')
end

-- Rejection counts (the rejections and shadow rejections hashes) are summed in this call
-- and written once per key and code at its end (flushcounts): a count writes nothing a
-- claim depends on, so deferring it can never let a claim take more than is left.
local counts, countorder = {}, {}
local function count1(key, code)
  local id = key .. '\t' .. code
  local c = counts[id]
  if not c then
    c = {key, code, 0}
    counts[id] = c
    countorder[#countorder + 1] = c
  end
  c[3] = c[3] + 1
end
local function flushcounts()
  for _, c in ipairs(countorder) do
    redis.call('HINCRBY', c[1], c[2], c[3])
  end
end

local function reject(k, code, fp, store)
  count1(KEYS[k + 8], code)
  if store then
    redis.call('SET', KEYS[k + 3], 'R\t' .. code .. '\t\t\t\t\t' .. fp, 'PX', rejttl)
  end
  return code
end

-- The counter hashes - campaign meta, SKU, business line - are read at most once per
-- call (one HMGET, by the first claim that needs each) and kept current here as this
-- call takes from them: within one atomic call nothing else writes them, so a value
-- read here is still the value in Redis. An accepted claim writes the new values back
-- at once (one HSET per hash), before its outbox entry and idempotency record, so a
-- call that dies midway has written counters for at least every claim it published
-- (it can only under-sell).
-- 'held' (meta: budget, SKU: units) is what pushes hold in escrow (push.lua); 'pool'
-- (SKU) is 1 when the SKU hands out partner codes; 'kind' and 'odds' are a lottery's
-- (DESIGN.md "Lottery").
local META_FIELDS = {'bl', 'starts', 'ends', 'limit', 'budget', 'spent', 'paused', 'seg', 'ttl', 'taken', 'rid', 'held',
  'kind', 'odds'}
local SKU_FIELDS = {'stock', 'value', 'taken', 'held', 'pool'}
local BL_FIELDS = {'budget', 'spent'}
-- One cache per role (the rules hashes below have theirs), so a key can never be read
-- with another role's fields.
local metas, skus, bls = {}, {}, {}
local function cached(cache, key, fields)
  local h = cache[key]
  if not h then
    h = redis.call('HMGET', key, unpack(fields))
    cache[key] = h
  end
  return h
end
-- int formats a counter as Redis stores it (tostring would write 1e+15).
local function int(v)
  return string.format('%d', v)
end

-- Rules: the campaign's hash overrides the global one field by field (the freeze rule
-- too: its count spans campaigns, its threshold is the one in force where the claim is
-- made). Each rules hash is read once per script call (one HMGET), not once per claim:
-- within one atomic call it cannot change. Windows are stored in milliseconds; a missing
-- or zero max turns a rule off.
--
-- The 11th field, 'warm' of the global hash, is the risk-state marker: the rebuild of
-- the risk state from Postgres (internal/risk/riskstate) writes it last, so while it is
-- absent (Redis lost its data, nothing rebuilt yet) no claim is decided on missing
-- blocks or rules: NOT_WARM (DESIGN.md "Risk state survives Redis").
local RULE_FIELDS = {'device.max', 'device.window_ms', 'ip.max', 'ip.window_ms', 'user.max',
  'user.window_ms', 'freeze.max', 'freeze.window_ms', 'freeze.for_ms', 'shadow', 'warm'}
local NRULES = 10
local rulehashes = {}
local merged = {}
local function rules(ckey, gkey)
  local r = merged[ckey]
  if r then return r end
  local c, g = cached(rulehashes, ckey, RULE_FIELDS), cached(rulehashes, gkey, RULE_FIELDS)
  r = {}
  for j = 1, NRULES do
    local v = c[j]
    if not v then v = g[j] end
    r[j] = tonumber(v) or 0
  end
  r.warm = g[NRULES + 1] and true or false
  merged[ckey] = r
  return r
end

-- count counts the entries of a sliding-window log in (now - win, now] (one ZCOUNT: a
-- rejected claim, the common case under attack, writes nothing). When the count has
-- reached max, retry is when the entry whose expiry brings the count back below max
-- leaves the window: exactly the moment one more claim would pass.
local function count(key, win, max)
  local from = '(' .. (now - win)
  local c = redis.call('ZCOUNT', key, from, '+inf')
  local retry = 0
  if c >= max then
    local e = redis.call('ZRANGEBYSCORE', key, from, '+inf', 'WITHSCORES', 'LIMIT', c - max, 1)
    retry = tonumber(e[2]) + win - now
  end
  return c, retry
end

-- log records an accepted claim in a sliding-window log: what has left the window is
-- trimmed (so a log holds at most one window of accepted claims) and the key expires
-- one window after its newest entry. With counted, it returns the count before this
-- claim (the freeze rule needs it; velocity counted in risk() already).
local function log(key, win, member, counted)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - win)
  local c = -1
  if counted then c = redis.call('ZCARD', key) end
  redis.call('ZADD', key, now, member)
  redis.call('PEXPIRE', key, win)
  return c
end

-- The velocity rules in the order they are reported: rule fields (max, window), key
-- offset of the log, flag, rejection code.
local VELOCITY = {{1, 2, 12, F_DEVICE_VELOCITY, DEVICE_VELOCITY}, {3, 4, 13, F_IP_VELOCITY, IP_VELOCITY},
  {5, 6, 14, F_USER_VELOCITY, USER_VELOCITY}}

-- What the risk checks saw for the current claim: counts (-1 = not evaluated), flags.
local seen = {-1, -1, -1, -1, -1, 0}

-- risk evaluates blocks, freezes and velocity for claim i before anything is taken. It
-- returns the rejection code and retry_after_ms to enforce (0 when the claim may
-- proceed) and the merged rules, for recording the accepted claim in the windows.
local function risk(k, user, dev, ip, push)
  local r = rules(KEYS[k + 10], KEYS[k + 11])
  if not r.warm then
    return NOT_WARM, 0, r
  end
  local flags = 0
  if r[10] == 1 then flags = F_SHADOW end
  local b = redis.call('MGET', KEYS[k + 15], KEYS[k + 16], KEYS[k + 17], KEYS[k + 18], KEYS[k + 19])
  if b[1] then flags = flags + F_BLOCKED_DEVICE end
  if b[2] then flags = flags + F_BLOCKED_IP end
  if b[3] then flags = flags + F_BLOCKED_USER end
  if b[4] then flags = flags + F_FROZEN_DEVICE end
  if b[5] then flags = flags + F_FROZEN_USER end
  local code, retry = 0, 0
  if flags % 32 > 0 then
    code = BLOCKED
  end
  -- A push is the platform issuing, not the user (or a device) claiming: no velocity
  -- rule applies to it (DESIGN.md "Push"); blocks and freezes do.
  for j = 1, push and 0 or 3 do
    local v = VELOCITY[j]
    local max, win = r[v[1]], r[v[2]]
    if max > 0 and win > 0 then
      local c, ra = count(KEYS[k + v[3]], win, max)
      seen[j] = c
      if c >= max then
        flags = flags + v[4]
        if code == 0 then code = v[5] end
        if code ~= BLOCKED and ra > retry then retry = ra end
      end
    end
  end
  seen[6] = flags
  if flags % 512 >= 256 then
    -- Shadow mode: evaluated and recorded, never enforced.
    if code ~= 0 then
      count1(KEYS[k + 22], code)
    end
    return 0, 0, r
  end
  return code, retry, r
end

-- record puts an accepted claim into the sliding windows it is counted in, and freezes
-- its device or user when it takes them over the freeze rule's max.
local function record(k, r, reqid, camp, user, dev)
  for j = 1, 3 do
    local win = r[j * 2]
    if r[j * 2 - 1] > 0 and win > 0 then
      log(KEYS[k + 11 + j], win, reqid, false)
    end
  end
  -- The freeze rule counts only accepted claims, so its windows are read here, not in
  -- risk(): a rejected claim costs nothing for it (and reports no freeze counts).
  local fmax, fwin, ffor = r[7], r[8], r[9]
  if fmax > 0 and fwin > 0 and ffor > 0 then
    local member = camp .. '\t' .. reqid
    local shadow = seen[6] % 512 >= 256
    for j = 1, 2 do
      seen[3 + j] = log(KEYS[k + 19 + j], fwin, member, true)
      if seen[3 + j] + 1 > fmax then
        seen[6] = seen[6] + (j == 1 and F_FROZE_DEVICE or F_FROZE_USER)
        if not shadow then
          local what = (j == 1) and ('device ' .. dev) or ('user ' .. user)
          redis.call('SET', KEYS[k + 17 + j],
            'auto-freeze: ' .. what .. ' had ' .. (seen[3 + j] + 1) .. ' accepted claims within ' ..
            fwin .. 'ms (last in campaign ' .. camp .. ')\tclaim.lua\t' .. now, 'PX', ffor)
          -- The index lets riskctl list freezes without scanning the key space; it is
          -- trimmed of what has expired whenever something is added.
          redis.call('ZREMRANGEBYSCORE', KEYS[k + 23], '-inf', now)
          redis.call('ZADD', KEYS[k + 23], now + ffor, (j == 1) and ('frz:d:' .. dev) or ('frz:u:' .. user))
        end
      end
    end
  end
end

-- Lottery draws (DESIGN.md "Lottery"; issue 17). A lottery campaign's meta carries
-- kind 'lottery' and its odds, '<version>\t<no-prize weight>\t<sku>\t<weight>...'
-- (warm.lua; internal/catalog OddsField). A claim is a draw: the gateway drew r, a
-- uniform integer in [0, total weight), with crypto/rand, and sends it with the odds
-- version it used ('<version>:<r>') and, as the claim's SKU, the prize r points at
-- ('' for the no-prize band) - so the SKU key in KEYS is the one the draw may take
-- from. The walk below is internal/odds Table.Pick: the no-prize band first, then the
-- prizes in order. A prize out of stock, or whose value the campaign's or business
-- line's budget cannot cover, passes its band to no-prize (the total never changes).
local oddscache = {}
local function oddsof(m)
  local o = oddscache[m]
  if o then return o end
  local f = {}
  for v in string.gmatch(m[14] or '', '[^\t]+') do f[#f + 1] = v end
  o = {ver = f[1] or '', w0 = tonumber(f[2]) or 0, skus = {}, weights = {}}
  o.total = o.w0
  for j = 3, #f - 1, 2 do
    o.skus[#o.skus + 1] = f[j]
    o.weights[#o.weights + 1] = tonumber(f[j + 1])
    o.total = o.total + tonumber(f[j + 1])
  end
  oddscache[m] = o
  return o
end

-- pick walks the odds with r: the prize's SKU, or '' for the no-prize band.
local function pick(o, r)
  if r < o.w0 then return '' end
  r = r - o.w0
  for j = 1, #o.skus do
    if r < o.weights[j] then return o.skus[j] end
    r = r - o.weights[j]
  end
  return ''
end

-- draw decides a lottery claim once it has passed every check a claim passes before the
-- stock (window, risk, segment, per-user limit, partner quota). It returns true when
-- the draw won a prize that stock and budgets can give (the caller takes it as an
-- accepted claim, with the draw field in its outbox entry), or the results of a STALE
-- or NO_PRIZE answer. A draw that won nothing takes one from the per-user count (and
-- is recorded in the velocity windows like an accepted claim), is an outbox entry and
-- an 'A' record with value 0 and no SKU, made durable and settled like a claim (a
-- draws row), and is replayed as NO_PRIZE with the same draw_id.
local function draw(k, m, drawarg, sku, reqid, claimid, camp, user, dev, ip, channel, r, keep)
  local o = oddsof(m)
  local ver, rs = string.match(drawarg or '', '^([^:]+):(%d+)$')
  local rv = tonumber(rs)
  if ver ~= o.ver or not rv or rv >= o.total then
    return false, STALE
  end
  local won = pick(o, rv)
  if won ~= sku then
    return false, STALE
  end
  local lfield = ver .. ':' .. rs .. ':' .. won
  -- A fenced business line (recovery removed its budget) refuses every draw, whatever
  -- it drew: a no-prize draw takes a per-user count and an outbox entry too, which the
  -- rebuild under way would not see (NOT_WARM: 503, nothing taken).
  local b = cached(bls, KEYS[k + 5], BL_FIELDS)
  if not b[1] then
    return false, NOT_WARM
  end
  if won ~= '' then
    local s = cached(skus, KEYS[k + 2], SKU_FIELDS)
    local value = tonumber(s[2])
    if not s[1] then
      return false, STALE
    end
    if tonumber(s[1]) > 0 and tonumber(m[6]) + value <= tonumber(m[5]) then
      if tonumber(b[2] or '0') + value <= tonumber(b[1]) then
        return true, lfield
      end
    end
  end
  redis.call('HINCRBY', KEYS[k + 4], user, 1)
  record(k, r, reqid, camp, user, dev)
  local oid = redis.call('XADD', KEYS[k + 6], '*',
    'c', claimid, 'r', reqid, 's', '', 'u', user, 'd', dev, 'i', ip,
    'v', 0, 't', now, 'e', now, 'b', m[1], 'h', channel, 'l', lfield)
  redis.call('SET', KEYS[k + 3],
    'A\t' .. claimid .. '\t0\t' .. now .. '\t' .. now .. '\t' .. oid .. '\t\t' .. user .. '\t' .. dev,
    'PX', keep + grace)
  return false, NO_PRIZE, claimid, now, oid
end

-- handed is the partner code the claim being decided took (result 17; DESIGN.md
-- "Partner code pools"), reset before each claim.
local handed
local function decide(i)
  local k = (i - 1) * K
  local a = 3 + (i - 1) * A
  local reqid, claimid, camp, sku, user, dev, ip =
    ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], ARGV[a + 5], ARGV[a + 6], ARGV[a + 7]
  local channel = ARGV[a + 8]
  local partner = string.match(channel, '^partner:(.+)$')
  local push = string.match(channel, '^push:(.+)$')
  local fp = sku .. '\t' .. user .. '\t' .. dev

  if not onthisrun(cached(metas, KEYS[k + 1], META_FIELDS)) then
    return NOT_WARM, 0, '', 0, 0, 0, '', 0
  end
  -- A lottery's SKU argument is the gateway's pick, not the client's: the request's
  -- fingerprint is its user and device, and its record's SKU field holds the prize won.
  local lottery = cached(metas, KEYS[k + 1], META_FIELDS)[13] == 'lottery'

  local prev = redis.call('GET', KEYS[k + 3])
  if prev then
    local st, pc, pv, pcl, pe, po, pfp = parse(prev)
    if st ~= 'V' and lottery then
      local psku, ptail = string.match(pfp, '^([^\t]*)(\t.*)$')
      if ptail ~= '\t' .. user .. '\t' .. dev then
        return KEY_REUSE, 0, '', 0, 0, 0, '', 0
      end
      if st == 'D' or st == 'S' then
        if psku == '' then
          return NO_PRIZE, 1, pc, 0, tonumber(pcl), tonumber(pe), po, 0
        end
        return ACCEPTED, 1, pc, tonumber(pv), tonumber(pcl), tonumber(pe), po, 0, psku
      end
      pfp = fp
    end
    if st ~= 'V' then
      if pfp ~= fp then
        return KEY_REUSE, 0, '', 0, 0, 0, '', 0
      end
      if st == 'R' then
        return tonumber(pc), 1, '', 0, 0, 0, '', 0
      end
      if st == 'A' then
        -- The first attempt is still being made durable (or its gateway died and the
        -- outbox relay will void it past its bound). Answering 200 now could promise a
        -- claim that is about to be voided, so the retry is told to come back (the
        -- gateway waits for the first attempt's outcome before it answers 503).
        return IN_FLIGHT, 1, pc, 0, 0, 0, '', 0
      end
      return ACCEPTED, 1, pc, tonumber(pv), tonumber(pcl), tonumber(pe), po, 0
    end
    -- A voided claim (its produce failed and was compensated) is decided anew.
  end

  local m = cached(metas, KEYS[k + 1], META_FIELDS)
  if not m[1] then
    -- The gateway runs this script only for a campaign its route found in Redis, so a
    -- meta without "bl" now means the state was lost or is being rebuilt (fence.lua
    -- leaves only its token): 503, retry, nothing remembered (issue 21.5).
    return NOT_WARM, 0, '', 0, 0, 0, '', 0
  end
  -- The gateway routes the business-line and segment keys from a cached copy of the
  -- campaign; if that copy is stale the script refuses rather than touch the wrong key.
  if KEYS[k + 5] ~= 'fg:bl:{' .. m[1] .. '}' then
    return STALE, 0, '', 0, 0, 0, '', 0
  end
  local seg = m[8] or ''
  if seg ~= '' and KEYS[k + 9] ~= 'fg:seg:{' .. seg .. '}' then
    return STALE, 0, '', 0, 0, 0, '', 0
  end
  local s = cached(skus, KEYS[k + 2], SKU_FIELDS)
  if not s[1] and not lottery then
    return UNKNOWN_SKU, 0, '', 0, 0, 0, '', 0
  end

  -- paused and not_started are not remembered: they stop being true (a resume, the
  -- opening), and a request_id tried early must then be decided like any other
  -- (DESIGN.md "Which rejections are remembered"). Not remembering them also means a
  -- flood of unique request_ids against a closed campaign leaves no key per request.
  if m[7] == '1' then
    return reject(k, PAUSED, fp, false), 0, '', 0, 0, 0, '', 0
  end
  local ends = tonumber(m[3])
  if now < tonumber(m[2]) then
    return reject(k, NOT_STARTED, fp, false), 0, '', 0, 0, 0, '', 0
  end
  if now >= ends then
    return reject(k, ENDED, fp, true), 0, '', 0, 0, 0, '', 0
  end

  -- Risk checks come before anything that depends on what is left (segment, per-user
  -- limit, stock, budget). A risk rejection is not remembered in the idempotency
  -- record: a 429 tells the client to retry after retry_after_ms and an unblock must
  -- let the very next retry through, so a retry is decided anew.
  local rcode, retry, r = risk(k, user, dev, ip, push)
  if rcode == NOT_WARM then
    return NOT_WARM, 0, '', 0, 0, 0, '', 0
  end
  if rcode ~= 0 then
    return reject(k, rcode, fp, false), 0, '', 0, 0, 0, '', retry
  end

  if seg ~= '' and redis.call('SISMEMBER', KEYS[k + 9], user) == 0 then
    return reject(k, NOT_ELIGIBLE, fp, true), 0, '', 0, 0, 0, '', 0
  end
  local used = tonumber(redis.call('HGET', KEYS[k + 4], user) or '0')
  if used >= tonumber(m[4]) then
    return reject(k, USER_LIMIT, fp, true), 0, '', 0, 0, 0, '', 0
  end
  -- A partner's claim needs room in its quota for this campaign (no quota: none).
  -- Read afresh per claim: an earlier claim of this call may have taken from it.
  if partner then
    local q = redis.call('HMGET', KEYS[k + 24], 'q:' .. partner, 't:' .. partner)
    if not q[1] or (tonumber(q[2]) or 0) >= tonumber(q[1]) then
      return reject(k, PARTNER_QUOTA, fp, true), 0, '', 0, 0, 0, '', 0
    end
  end
  local lfield
  if lottery then
    local keep = ends - now
    if keep < 0 then keep = 0 end
    local take, code, cid, at, oid = draw(k, m, ARGV[a + 9], sku, reqid, claimid, camp, user, dev, ip, channel, r, keep)
    if not take then
      return code, 0, cid or '', 0, at or 0, at or 0, oid or '', 0
    end
    lfield = code
  end
  -- sold_out is not remembered either: it is re-derived from the stock on a retry (the
  -- same answer while sold out; a claim once a void or expiry put a unit back, as a new
  -- tap would get), so a flood of unique request_ids at a sold-out SKU leaves no key
  -- per request (DESIGN.md "Which rejections are remembered", issue 14).
  local value = tonumber(s[2])
  -- Push escrow (DESIGN.md "Push"): push.lua held units and budget for a push; other
  -- claims see only what is not held (stock - held, budget - spent - held). A push's
  -- claim takes from its escrow while the escrow has room; once it has none (a void by
  -- the relay gave a unit back to the free stock) it competes for the free stock like
  -- any claim. Either way the real stock and budget bound it, so an escrow that outlived
  -- its counters (a rebuild) can never let a claim take more than there is.
  local sheld, mheld = tonumber(s[4]) or 0, tonumber(m[12]) or 0
  local esc
  if push then
    local e = redis.call('HMGET', KEYS[k + 25], 'st:' .. push, 'u:' .. push .. ':' .. sku, 'b:' .. push)
    if e[1] == '1' and (tonumber(e[2]) or 0) > 0 and (tonumber(e[3]) or 0) >= value then
      esc = push
    end
  end
  if esc then
    if tonumber(s[1]) <= 0 then
      return reject(k, SOLD_OUT, fp, false), 0, '', 0, 0, 0, '', 0
    end
    if tonumber(m[6]) + value > tonumber(m[5]) then
      return reject(k, BUDGET_EXHAUSTED, fp, true), 0, '', 0, 0, 0, '', 0
    end
  else
    if tonumber(s[1]) - sheld <= 0 then
      return reject(k, SOLD_OUT, fp, false), 0, '', 0, 0, 0, '', 0
    end
    if tonumber(m[6]) + mheld + value > tonumber(m[5]) then
      return reject(k, BUDGET_EXHAUSTED, fp, true), 0, '', 0, 0, 0, '', 0
    end
  end
  local b = cached(bls, KEYS[k + 5], BL_FIELDS)
  if not b[1] then
    return NOT_WARM, 0, '', 0, 0, 0, '', 0
  end
  if tonumber(b[2] or '0') + value > tonumber(b[1]) then
    return reject(k, BUDGET_EXHAUSTED, fp, true), 0, '', 0, 0, 0, '', 0
  end
  -- Partner code pool (DESIGN.md "Partner code pools"): the last check, so a code
  -- popped is always handed out. An empty pool is sold_out.
  local code
  if s[5] == '1' then
    code = redis.call('SPOP', KEYS[k + 26])
    if not code then
      return reject(k, SOLD_OUT, fp, false), 0, '', 0, 0, 0, '', 0
    end
  end

  handed = code
  -- Take: the cached values and Redis move together (what HINCRBY did, one HSET a hash).
  s[1] = int(tonumber(s[1]) - 1)
  s[3] = int((tonumber(s[3]) or 0) + 1)
  redis.call('HSET', KEYS[k + 2], 'stock', s[1], 'taken', s[3])
  m[6] = int(tonumber(m[6]) + value)
  m[10] = int((tonumber(m[10]) or 0) + 1)
  redis.call('HSET', KEYS[k + 1], 'spent', m[6], 'taken', m[10])
  if esc then
    s[4] = int(sheld - 1)
    m[12] = int(mheld - value)
    redis.call('HSET', KEYS[k + 2], 'held', s[4])
    redis.call('HSET', KEYS[k + 1], 'held', m[12])
    redis.call('HINCRBY', KEYS[k + 25], 'u:' .. esc .. ':' .. sku, -1)
    redis.call('HINCRBY', KEYS[k + 25], 'b:' .. esc, -value)
  end
  b[2] = int((tonumber(b[2]) or 0) + value)
  redis.call('HSET', KEYS[k + 5], 'spent', b[2])
  redis.call('HINCRBY', KEYS[k + 4], user, 1)
  if partner then
    redis.call('HINCRBY', KEYS[k + 24], 't:' .. partner, 1)
  end
  if not push then
    record(k, r, reqid, camp, user, dev)
  end
  local expires = now + tonumber(m[9])
  local oid
  if lfield then
    oid = redis.call('XADD', KEYS[k + 6], '*',
      'c', claimid, 'r', reqid, 's', sku, 'u', user, 'd', dev, 'i', ip,
      'v', value, 't', now, 'e', expires, 'b', m[1], 'h', channel, 'k', code or '', 'l', lfield)
  else
    oid = redis.call('XADD', KEYS[k + 6], '*',
      'c', claimid, 'r', reqid, 's', sku, 'u', user, 'd', dev, 'i', ip,
      'v', value, 't', now, 'e', expires, 'b', m[1], 'h', channel, 'k', code or '')
  end
  redis.call('HSET', KEYS[k + 7], claimid, reqid)
  local keep = ends - now
  if keep < 0 then keep = 0 end
  redis.call('SET', KEYS[k + 3],
    'A\t' .. claimid .. '\t' .. value .. '\t' .. now .. '\t' .. expires .. '\t' .. oid .. '\t' .. fp,
    'PX', keep + grace)
  if lfield then
    return ACCEPTED, 0, claimid, value, now, expires, oid, 0, sku
  end
  return ACCEPTED, 0, claimid, value, now, expires, oid, 0
end

for i = 1, n do
  seen[1], seen[2], seen[3], seen[4], seen[5], seen[6] = -1, -1, -1, -1, -1, 0
  handed = nil
  local code, replayed, cid, value, claimed, expires, oid, retry, prize = decide(i)
  local j = (i - 1) * R
  out[j + 1] = code
  out[j + 2] = replayed
  out[j + 3] = cid
  out[j + 4] = value
  out[j + 5] = claimed
  out[j + 6] = expires
  out[j + 7] = oid
  out[j + 8] = retry
  out[j + 9] = now
  for q = 1, 6 do
    out[j + 9 + q] = seen[q]
  end
  out[j + 16] = prize or ''
  -- The partner code handed out ('' none): the gateway writes it in the record it
  -- produces (the outbox entry carries it too, field k).
  out[j + 17] = handed or ''
end
flushcounts()
return out
