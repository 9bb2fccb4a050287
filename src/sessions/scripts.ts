import { LUA_NOW } from '../limits/lua.js';
import { UNREADABLE_SESSION_STATE, UNREADABLE_TOKEN_HALT } from '../limits/scripts.js';

// Lua scripts that keep the Redis mirror of sessions and halts (the keys the gate script reads; layout
// in src/limits/scripts.ts). Each is atomic, so a cap check and the session it admits, or a halt and
// the check of whose session it is, cannot interleave with another replica.

/** Opens a session: epoch present, per-token caps on open and newly opened sessions, born halted if the token is. */
export const OPEN_LUA = `
local req = cjson.decode(ARGV[1])
local p = req.p
${LUA_NOW}
local function reply(r) r.now = now return cjson.encode(r) end
if redis.call('EXISTS', p .. 'epoch') == 0 then return reply({ r = 'NO_EPOCH' }) end
-- The token's sessions: those whose hash is gone (idled out) no longer count. Checked here, at open,
-- rather than tracked on every call.
local okey = p .. 'so:' .. req.tok
local open = 0
for _, member in ipairs(redis.call('ZRANGE', okey, 0, -1)) do
  if redis.call('EXISTS', p .. 's:' .. member) == 1 then
    open = open + 1
  else
    redis.call('ZREM', okey, member)
  end
end
if req.maxOpen > 0 and open >= req.maxOpen then return reply({ r = 'TOO_MANY_OPEN', n = open }) end
local idx = math.floor(now / req.hour)
local nkey = p .. 'sn:' .. req.tok .. ':' .. string.format('%d', idx)
local n = tonumber(redis.call('GET', nkey)) or 0
if req.maxNew > 0 and n >= req.maxNew then
  return reply({ r = 'TOO_MANY_NEW', n = n, retry = (idx + 1) * req.hour - now })
end
redis.call('INCR', nkey)
redis.call('PEXPIRE', nkey, req.hour + 5000)
-- A halt key that is not a string still halts (as in the gate script), under a trigger that says so.
local th = redis.pcall('GET', p .. 'th:' .. req.tok)
if type(th) == 'table' then th = '${UNREADABLE_TOKEN_HALT}' end
local skey = p .. 's:' .. req.sid
local st = 'active'
if th then st = 'halted' end
redis.call('HSET', skey, 'tok', req.tok, 'ro', req.ro, 'srv', req.srv, 'pur', req.pur, 'st', st, 'trg', th or '')
if th then redis.call('PERSIST', skey) else redis.call('PEXPIRE', skey, req.idle) end
redis.call('ZADD', okey, now, req.sid)
return reply({ r = 'OK', st = st, trg = th or '', open = open + 1, new = n + 1 })
`;

/**
 * Applies halts (from SessionService.halt, and the periodic reconcile from Postgres). A session is
 * halted only if its hash belongs to this token, or is missing and Postgres supplied its fields: a
 * caller can never halt someone else's session by naming its id. The first trigger is kept.
 */
export const HALT_LUA = `
local req = cjson.decode(ARGV[1])
local p = req.p
local out = {}
for i, h in ipairs(req.halts) do
  local bound = 0
  if h.sid ~= '' then
    local skey = p .. 's:' .. h.sid
    local owner = redis.call('HGET', skey, 'tok')
    if owner == h.tok then
      if redis.call('HGET', skey, 'st') ~= 'halted' then redis.call('HSET', skey, 'st', 'halted', 'trg', h.trg) end
      bound = 1
    elseif not owner and h.f then
      redis.call('HSET', skey, 'tok', h.tok, 'ro', h.f.ro, 'srv', h.f.srv, 'pur', h.f.pur, 'st', 'halted', 'trg', h.trg)
      -- Re-created: it counts against the token's open sessions again (OPEN_LUA's cap).
      redis.call('ZADD', p .. 'so:' .. h.tok, 'NX', 0, h.sid)
      bound = 1
    end
    if bound == 1 then
      redis.call('PERSIST', skey)
      redis.call('PERSIST', p .. 'lc:' .. h.sid)
    end
  end
  if h.htok == 1 then redis.call('SET', p .. 'th:' .. h.tok, h.trg, 'NX') end
  out[i] = bound
end
return cjson.encode({ bound = out })
`;

/**
 * Lifts halts: the listed sessions of this token become active with fresh totals, the token halt is
 * removed if asked, and the token's cascade window is cleared (the human confirmed the chain).
 */
export const RESUME_LUA = `
local req = cjson.decode(ARGV[1])
local p = req.p
local resumed = {}
for _, sid in ipairs(req.sids) do
  local skey = p .. 's:' .. sid
  if redis.call('HGET', skey, 'tok') == req.tok then
    redis.call('HSET', skey, 'st', 'active', 'trg', '')
    -- fresh session totals and 80% alert flags
    for _, f in ipairs(redis.call('HKEYS', skey)) do
      local head = string.sub(f, 1, 2)
      if head == 'c:' or head == 'wc' then redis.call('HDEL', skey, f) end
    end
    redis.call('PEXPIRE', skey, req.idle)
    redis.call('PEXPIRE', p .. 'lc:' .. sid, req.idle)
    resumed[#resumed + 1] = sid
  end
end
if req.token == 1 then redis.call('DEL', p .. 'th:' .. req.tok) end
redis.call('DEL', p .. 'tc:' .. req.tok)
return cjson.encode({ resumed = resumed })
`;

/**
 * Rebuilds sessions after Redis lost its data. Never lifts a halt: a session Redis already holds is
 * left as it is unless Postgres says it is halted.
 */
export const RELOAD_LUA = `
local req = cjson.decode(ARGV[1])
local p = req.p
for _, s in ipairs(req.sessions) do
  local skey = p .. 's:' .. s.id
  -- Every live session counts against its token's open sessions again (OPEN_LUA's cap).
  redis.call('ZADD', p .. 'so:' .. s.tok, 'NX', 0, s.id)
  if s.st == 'halted' then
    redis.call('HSET', skey, 'tok', s.tok, 'ro', s.ro, 'srv', s.srv, 'pur', s.pur, 'st', 'halted', 'trg', s.trg)
    redis.call('PERSIST', skey)
  elseif redis.call('EXISTS', skey) == 0 then
    redis.call('HSET', skey, 'tok', s.tok, 'ro', s.ro, 'srv', s.srv, 'pur', s.pur, 'st', 'active', 'trg', '')
    redis.call('PEXPIRE', skey, req.idle)
  end
end
for _, h in ipairs(req.tokens) do
  redis.call('SET', p .. 'th:' .. h.tok, h.trg, 'NX')
end
return '{}'
`;

/** Which of these sessions Redis no longer holds (idle expiry), answered only while the epoch stands. */
export const SWEEP_LUA = `
local req = cjson.decode(ARGV[1])
local p = req.p
local epoch = redis.call('GET', p .. 'epoch')
if not epoch then return '{"noepoch":1}' end
local gone = {}
for _, id in ipairs(req.ids) do
  if redis.call('EXISTS', p .. 's:' .. id) == 0 then gone[#gone + 1] = id end
end
return cjson.encode({ gone = gone, epoch = epoch })
`;

/**
 * Drops sessions the idle sweep closed from their tokens' open-session sets (so:<tok>), so a token that
 * opens no more sessions does not keep its set for ever (an empty set is deleted by Redis). Only a
 * session whose hash is gone: one a reload copied back meanwhile still counts.
 */
export const FORGET_LUA = `
local req = cjson.decode(ARGV[1])
local p = req.p
local n = 0
for _, s in ipairs(req.sessions) do
  if redis.call('EXISTS', p .. 's:' .. s.sid) == 0 then n = n + redis.call('ZREM', p .. 'so:' .. s.tok, s.sid) end
end
return cjson.encode({ removed = n })
`;

/** Records a call denied by an earlier pipeline step on the session's last-calls list, if the session is this token's. */
export const PUSH_CALL_LUA = `
local req = cjson.decode(ARGV[1])
local p = req.p
${LUA_NOW}
if redis.call('HGET', p .. 's:' .. req.sid, 'tok') ~= req.tok then return '{"pushed":0}' end
local e = req.e
e.at = now
local lkey = p .. 'lc:' .. req.sid
redis.call('LPUSH', lkey, cjson.encode(e))
redis.call('LTRIM', lkey, 0, req.keep - 1)
if redis.call('HGET', p .. 's:' .. req.sid, 'st') ~= 'halted' then redis.call('PEXPIRE', lkey, req.idle) end
return '{"pushed":1}'
`;

/**
 * Closes a session of this token at its gateway's or an operator's request, as if it had idled out: its
 * hash is deleted (the gate answers SESSION_UNKNOWN) and it no longer counts against the token's open
 * sessions. Never a halted session, and nothing while the token is halted: closing must not lift a halt.
 */
export const CLOSE_LUA = `
local req = cjson.decode(ARGV[1])
local p = req.p
if redis.call('EXISTS', p .. 'epoch') == 0 then return '{"r":"NO_EPOCH"}' end
local skey = p .. 's:' .. req.sid
local f = redis.call('HMGET', skey, 'tok', 'st', 'trg')
if f[1] and f[1] ~= req.tok then return '{"r":"NOT_OWNER"}' end
local th = redis.pcall('GET', p .. 'th:' .. req.tok)
if type(th) == 'table' then th = '${UNREADABLE_TOKEN_HALT}' end
-- A state the gate holds as halted (neither active nor halted) is not closed either.
if f[1] and f[2] ~= 'active' and f[2] ~= 'halted' then f[2], f[3] = 'halted', '${UNREADABLE_SESSION_STATE}' end
if f[2] == 'halted' then return cjson.encode({ r = 'HALTED', trg = f[3] or '', th = th or '' }) end
if th then return cjson.encode({ r = 'TOKEN_HALTED', trg = th }) end
redis.call('DEL', skey)
redis.call('ZREM', p .. 'so:' .. req.tok, req.sid)
return '{"r":"CLOSED"}'
`;
