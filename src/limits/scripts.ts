import { LUA_NOW } from './lua.js';

// The decision pipeline's one Redis round trip (DESIGN.md §4 step 7). Everything a call needs from
// shared state is checked here, atomically (Redis runs one script at a time), with Redis TIME as the
// only clock, in this order:
//   a. the state epoch exists (else Redis lost its data: deny until reloaded from Postgres)
//   b. break-glass kill keys (string values holding the reason; a key of another type kills too); the
//      denial goes on the session's last-calls list if the session is this token's
//   c. session bound to this token; session halted; token halted
//   d. write in a read-only session; a server the session did not declare (both halt)
//   e. every counter (session totals halt; per-minute/per-day answer RATE_LIMITED)
//   f. the token's cascade-write window (halts)
// and only when all pass keeps the counters' increments (the script rolls them back otherwise), records
// the call in the token's cascade window and the session's last-calls list, and stores the decision's
// metadata for its RESULT. A denied call consumes no quota of any counter. With `dry` (explain) nothing
// is written.
//
// Key layout under the prefix: epoch; s:<sid> session hash {tok, ro, srv, pur, st, trg, c:* session
// totals, wc:* their 80% alert flags}; th:<tok> token halt (trigger); cm:/tm:/gm:/td: windowed counters
// (+ :w alert flags); tc:<tok> token cascade window (list); lc:<sid> last calls (list; both lists, newest
// first, are cut back to what is kept once they hold twice that, so readers take a prefix); so:<tok> the
// token's sessions (zset, for the open-session cap; pruned at each open and by the idle sweep); sn:<tok>:<hour> sessions opened that hour;
// d:<decision id> decision metadata; kill keys as passed in.
/** The trigger shown for a token halt key that does not hold a string (the gate still holds the token halted). */
export const UNREADABLE_TOKEN_HALT = 'unreadable halt record in Redis';
/** The trigger shown for a session whose state in Redis is neither active, halted nor closed (held as halted). */
export const UNREADABLE_SESSION_STATE = 'unreadable session state in Redis';

export const GATE_LUA = String.raw`
-- Positional arguments and an array reply: the caller pre-encodes the call record and the decision's
-- metadata, so nothing is JSON-decoded or encoded here on the hot path (see the ADR). The allowed path
-- builds one flat table and as few strings as it can: Lua work, not Redis commands, was most of the
-- script's time (docs/performance.md).
local p = ARGV[1]
local dry = ARGV[2] == '1'
local tok, sid, srv, cap = ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local pct, cas_th, cas_win = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local keep, idle, tkeep, tttl, dttl = tonumber(ARGV[10]), tonumber(ARGV[11]), tonumber(ARGV[12]), tonumber(ARGV[13]), tonumber(ARGV[14])
local dec, entry_head, meta, halt_token_on = ARGV[15], ARGV[16], ARGV[17], ARGV[18]
local nkills = tonumber(ARGV[19])
local kbase = 19
local rbase = kbase + nkills + 1
local nres = tonumber(ARGV[rbase])
local cbase = rbase + nres + 1
local nctr = tonumber(ARGV[cbase])
-- Counter i's fields are ARGV[cbase + 6i - 5 .. cbase + 6i]: key, hash field, max, window ms, TTL ms, halts.
local function cf(i) return ARGV[cbase + 6 * i - 4] end
local function cmax(i) return tonumber(ARGV[cbase + 6 * i - 3]) end
local function cw(i) return tonumber(ARGV[cbase + 6 * i - 2]) end
local function ct(i) return tonumber(ARGV[cbase + 6 * i - 1]) end
${LUA_NOW}

-- A denial's reply: {reason, now, used[], alerts[] (always empty), session{ro, srv, st, trg, pur}, trigger,
-- token_halted, last[], counter, retry_ms, kill_key, kill_reason, cascade_writes, cascade_resources[]},
-- built only when the call is denied. An allow's reply is flat instead:
-- {'OK', now, ro, srv, st, trg, pur, n_alerts, alerts..., used...}.
local R
local function den()
  if not R then R = { '', now, {}, {}, {}, '', 0, {}, 0, 0, '', '', 0, {} } end
  return R
end
local function reply(reason)
  den()[1] = reason
  return R
end

-- Lists are trimmed to keep entries once they hold twice that: readers take a prefix, and most calls
-- save the LTRIM.
local lkey = p .. 'lc:' .. sid
local function push_call(decision, code)
  if dry then return end
  if redis.call('LPUSH', lkey, entry_head .. ',"decision":"' .. decision .. '","code":"' .. code .. '","at":' .. string.format('%d', now) .. '}') > 2 * keep then
    redis.call('LTRIM', lkey, 0, keep - 1)
  end
  redis.call('PEXPIRE', lkey, idle)
end

-- One read for the epoch, the token's halt and every kill key.
local thkey = p .. 'th:' .. tok
local mg = { p .. 'epoch', thkey }
for i = 1, nkills do mg[i + 2] = ARGV[kbase + i] end
local got = redis.call('MGET', unpack(mg))
if not got[1] then return reply('NO_EPOCH') end
if nkills > 0 then
  local kkey, kreason
  for i = 1, nkills do
    if got[i + 2] then
      kkey, kreason = ARGV[kbase + i], got[i + 2]
      break
    end
  end
  if not kkey then
    -- MGET answers nil for a key that is not a string: a kill key of another type still kills, and a
    -- token halt of another type still halts. One EXISTS over all of them; which one, only then.
    local keys = { thkey }
    for i = 1, nkills do keys[i + 1] = ARGV[kbase + i] end
    local odd = redis.call('EXISTS', unpack(keys)) - (got[2] and 1 or 0)
    if odd > 0 and not got[2] and redis.call('EXISTS', thkey) == 1 then got[2], odd = '${UNREADABLE_TOKEN_HALT}', odd - 1 end
    if odd > 0 then kkey, kreason = 'kill key of unexpected type', 'a kill key exists but does not hold a string reason' end
  end
  if kkey then
    den()[11] = kkey
    R[12] = kreason
    -- Listed on the session's last calls like the script's other denials, if the session is this token's
    -- (the kill is checked before the session is read; these commands run on this denial only).
    if not dry then
      local ks = redis.call('HMGET', p .. 's:' .. sid, 'tok', 'st')
      if ks[1] == tok and ks[2] ~= 'closed' then
        push_call('deny', 'KILL_SWITCH')
        -- A halted session's list is kept as long as the session (its halt made both permanent).
        if ks[2] == 'halted' then redis.call('PERSIST', lkey) end
      end
    end
    return reply('KILL')
  end
end
local th = got[2]
if nkills == 0 and not th and redis.call('EXISTS', thkey) == 1 then th = '${UNREADABLE_TOKEN_HALT}' end

-- The session's own fields only (its hash also holds the session totals).
local skey = p .. 's:' .. sid
local sf = redis.call('HMGET', skey, 'tok', 'ro', 'srv', 'st', 'trg', 'pur')
-- Explain without a session id: the first call of a new session of this token (no session-only limits).
if dry and sid == '' then sf = { tok, '0', '', 'active', '', '' } end
local s_ro, s_srv, s_st, s_trg = sf[2] or '0', sf[3] or '', sf[4], sf[5] or ''
if not sf[1] or sf[1] ~= tok or s_st == 'closed' then return reply('SESSION_UNKNOWN') end
-- A state that is neither active nor halted (missing, or written by something else) is not taken for
-- active: the session is held as halted until an operator resumes it.
if s_st ~= 'active' and s_st ~= 'halted' then s_st, s_trg = 'halted', '${UNREADABLE_SESSION_STATE}' end
-- A denial's copy of the session's fields (a halt changes its state).
local function view()
  local v = den()[5]
  if #v == 0 then
    v[1], v[2], v[3], v[4], v[5] = s_ro, s_srv, s_st, s_trg, sf[6] or ''
  end
  return v
end
if s_st == 'halted' then
  view()
  R[6] = s_trg
  -- The token may be halted too: then only resuming the token lets this session go on.
  if th then R[7] = 1 end
  return reply('SESSION_HALTED')
end
if th then
  local v = view()
  v[3] = 'halted'
  v[4] = th
  R[6] = th
  return reply('TOKEN_HALTED')
end

-- Halts the session (and the token when the policy says so for this trigger) in the same script,
-- so no call can slip between the denial and the halt. Postgres gets the record right after.
local function halt(trigger, code, reason)
  push_call('deny', code)
  local v = view()
  if string.find(halt_token_on, ',' .. trigger .. ',', 1, true) then R[7] = 1 end
  if not dry then
    redis.call('HSET', skey, 'st', 'halted', 'trg', trigger)
    redis.call('PERSIST', skey)
    redis.call('PERSIST', lkey)
    if R[7] == 1 then redis.call('SET', thkey, trigger, 'NX') end
  end
  v[3] = 'halted'
  v[4] = trigger
  R[6] = trigger
  R[8] = redis.call('LRANGE', lkey, 0, 2)
  return reply(reason)
end

local writes = cap ~= 'read'
if writes and s_ro == '1' then return halt('WRITE_IN_READ_SESSION', 'PERMISSION_DENIED', 'READ_ONLY') end
if s_srv ~= '' then
  local declared = false
  for _, name in ipairs(cjson.decode(s_srv)) do
    if name == srv then declared = true end
  end
  if not declared then return halt('UNAUTHORIZED_SERVER', 'PERMISSION_DENIED', 'UNDECLARED_SERVER') end
end

-- Counters are incremented first and rolled back if the call is denied (a denial is rare; this saves a
-- read per counter on every allowed call). Nobody sees the intermediate values: the script is atomic.
local keys, used = {}, {}
for i = 1, nctr do
  local k = p .. ARGV[cbase + 6 * i - 5]
  local f, w = cf(i), cw(i)
  if f == '' and w > 0 then k = k .. ':' .. string.format('%d', math.floor(now / w)) end
  keys[i] = k
  if dry then
    local v
    if f ~= '' then v = redis.call('HGET', k, f) else v = redis.call('GET', k) end
    used[i] = (tonumber(v) or 0) + 1
  elseif f ~= '' then
    used[i] = redis.call('HINCRBY', k, f, 1)
  else
    used[i] = redis.call('INCR', k)
  end
end
local function rollback()
  for i = 1, nctr do
    if not dry then
      local f = cf(i)
      if f ~= '' then
        if redis.call('HINCRBY', keys[i], f, -1) <= 0 then redis.call('HDEL', keys[i], f) end
      elseif redis.call('DECR', keys[i]) <= 0 then
        redis.call('DEL', keys[i])
      end
    end
    used[i] = used[i] - 1
  end
  den()[3] = used
end
for i = 1, nctr do
  local max = cmax(i)
  if used[i] > max then
    rollback()
    view()
    R[9] = i
    if ARGV[cbase + 6 * i] == '1' then return halt('SESSION_LIMIT', 'SESSION_HALTED', 'LIMIT') end
    local w = cw(i)
    if w > 0 then R[10] = (math.floor(now / w) + 1) * w - now end
    push_call('deny', 'RATE_LIMITED')
    return reply('LIMIT')
  end
end

local tkey = p .. 'tc:' .. tok
if writes and cas_th > 0 then
  local prev, nw = {}, 1
  if cas_win > 1 then prev = redis.call('LRANGE', tkey, 0, cas_win - 2) end
  for _, e in ipairs(prev) do
    if string.byte(e, 1) == 119 then nw = nw + 1 end -- 'w'
  end
  -- Resources are only collected when there are enough writes to trip.
  if nw >= cas_th then
    local seen, resources = {}, {}
    local function add(r)
      if not seen[r] then
        seen[r] = true
        resources[#resources + 1] = r
      end
    end
    for i = 1, nres do add(ARGV[rbase + i]) end
    for _, e in ipairs(prev) do
      if string.byte(e, 1) == 119 then
        for r in string.gmatch(string.sub(e, 3), '[^\31]+') do add(r) end
      end
    end
    if #resources >= cas_th then
      rollback()
      R[13] = nw
      R[14] = resources
      return halt('CASCADE_WRITE', 'CASCADE_WRITE', 'CASCADE')
    end
  end
end

local OK = { 'OK', now, s_ro, s_srv, s_st, s_trg, sf[6] or '', 0 }
if not dry then
  -- A session's totals are fields of its hash, whose TTL is refreshed below; windows expire on their own.
  for i = 1, nctr do
    if used[i] == 1 and cf(i) == '' then redis.call('PEXPIRE', keys[i], ct(i)) end
  end

  -- The alert for a counter past pause_at_percent is raised once per window (per session for totals).
  if pct > 0 then
    for i = 1, nctr do
      if used[i] * 100 >= cmax(i) * pct then
        local f, first = cf(i), 0
        if f ~= '' then
          first = redis.call('HSETNX', keys[i], 'w' .. f, '1')
        elseif redis.call('SET', keys[i] .. ':w', '1', 'NX', 'PX', ct(i)) then
          first = 1
        end
        if first == 1 then
          OK[8] = OK[8] + 1
          OK[#OK + 1] = i
        end
      end
    end
  end

  -- The token's window is only kept while cascade detection is on for it (it is per role).
  if cas_th > 0 then
    local entry = 'r'
    if writes then
      local res = {}
      for i = 1, nres do res[i] = ARGV[rbase + i] end
      entry = 'w\31' .. table.concat(res, '\31')
    end
    if redis.call('LPUSH', tkey, entry) > 2 * tkeep then redis.call('LTRIM', tkey, 0, tkeep - 1) end
    redis.call('PEXPIRE', tkey, tttl)
  end

  push_call('allow', 'OK')
  redis.call('PEXPIRE', skey, idle)
  redis.call('SET', p .. 'd:' .. dec, meta, 'PX', dttl)
end
for i = 1, nctr do OK[#OK + 1] = used[i] end
return OK
`;

/** Attaches the gateway's RESULT (status, bytes, ...) to the call's entry on its session's last-calls list. */
export const OUTCOME_LUA = `
local req = cjson.decode(ARGV[1])
local meta = redis.call('GET', req.p .. 'd:' .. req.dec)
if not meta then return '{"found":0}' end
local m = cjson.decode(meta)
local lkey = req.p .. 'lc:' .. m.sid
local items = redis.call('LRANGE', lkey, 0, req.keep - 1)
for i, e in ipairs(items) do
  local x = cjson.decode(e)
  if x.id == req.dec then
    x.outcome = req.o
    redis.call('LSET', lkey, i - 1, cjson.encode(x))
    return '{"found":1}'
  end
end
return '{"found":0}'
`;

/**
 * Gives back what the gate script spent on an allowed call that was denied after all (a step after the
 * gate, or its INTENT could not be recorded): the decision's metadata goes (no RESULT for a call that did
 * not run), its last-calls entry says deny with the code, each counter is decremented in the window of
 * the check, and its cascade-window entry is removed. The metadata key is the guard: a second undo of
 * the same decision, or one after the metadata expired, changes nothing.
 */
export const UNDO_LUA = `
local req = cjson.decode(ARGV[1])
local p = req.p
local dkey = p .. 'd:' .. req.dec
if redis.call('EXISTS', dkey) == 0 then return '{"undone":0}' end
-- The entry as the gate wrote it (nothing else rewrites it before the answer): its verdict is replaced as
-- text, so an entry cjson cannot decode is still corrected.
local lkey = p .. 'lc:' .. req.sid
local head = '{"id":"' .. req.dec .. '"'
-- now 0: the caller never got the gate's reply (it timed out); the allow's time is its entry's.
local now = req.now
local items = redis.call('LRANGE', lkey, 0, 2 * req.keep - 1)
for i, e in ipairs(items) do
  if string.sub(e, 1, #head) == head then
    local body, at = string.match(e, '^(.*),"decision":"allow","code":"OK","at":(%d+)}$')
    if body then
      redis.call('LSET', lkey, i - 1, body .. ',"decision":"deny","code":"' .. req.code .. '","at":' .. at .. '}')
      if now == 0 then now = tonumber(at) end
    end
    break
  end
end
-- Still 0 (its entry was cut from the list meanwhile): the windows it counted in are unknown, and
-- windowed counters are left as they are rather than given back to another window.
for _, c in ipairs(req.ctr) do
  local k, f, w = p .. c[1], c[2], c[3]
  if f ~= '' then
    if redis.call('HINCRBY', k, f, -1) <= 0 then redis.call('HDEL', k, f) end
  elseif w == 0 or now > 0 then
    if w > 0 then k = k .. ':' .. string.format('%d', math.floor(now / w)) end
    if redis.call('DECR', k) <= 0 then redis.call('DEL', k) end
  end
end
if req.cas ~= '' then redis.call('LREM', p .. 'tc:' .. req.tok, 1, req.cas) end
-- Last: the guard against a second undo.
redis.call('DEL', dkey)
return '{"undone":1}'
`;
