import { LUA_NOW } from '../limits/lua.js';

// The Redis side of approvals: the live state the decision path reads, one atomic script per
// operation so two replicas asking about the same call cannot both open a request.
//
// Key layout under the prefix: ap:c:<call key> hash {id, st (pending|approved|rejected|used), exp (ms),
// tok, why (rejection reason)} — the latest approval of one exact call; ap:p:<token> zset of the token's
// pending approval ids scored by expiry (the cap on waiting requests). The call-key hash lives until
// exp + the rule's window, so an expiry, a rejection or a replay can still be named after its deadline.

/**
 * The approval step's one round trip. Answers the state of the latest approval of this call, or opens a
 * new pending request (id chosen by the caller) when there is none in force. Reads the session keys of
 * the gate (layout in src/limits/scripts.ts): a call the gate will refuse anyway (unknown, foreign or
 * halted session, halted token) is deferred to it instead of asking a human.
 */
export const CHECK_LUA = `
local req = cjson.decode(ARGV[1])
local p = req.p
${LUA_NOW}
local function reply(r) r.now = now return cjson.encode(r) end
if redis.call('EXISTS', p .. 'epoch') == 0 then return reply({ r = 'NO_EPOCH' }) end
local skey = p .. 's:' .. req.sid
if redis.call('HGET', skey, 'tok') ~= req.tok or redis.call('HGET', skey, 'st') == 'halted' or redis.call('EXISTS', p .. 'th:' .. req.tok) == 1 then
  return reply({ r = 'DEFER' })
end
local key = p .. 'ap:c:' .. req.ck
local cur = redis.call('HMGET', key, 'id', 'st', 'exp', 'why')
local id, st, exp, why = cur[1], cur[2], tonumber(cur[3] or '0'), cur[4] or ''
local prev_id, prev_st = '', ''
if id then
  if st == 'pending' or st == 'approved' then
    if now < exp then return reply({ r = string.upper(st), id = id, exp = exp }) end
    prev_id, prev_st = id, 'expired'
  elseif st == 'rejected' then
    if now < exp then return reply({ r = 'REJECTED', id = id, exp = exp, why = why }) end
  elseif st == 'used' then
    prev_id, prev_st = id, 'used'
  end
end
local zkey = p .. 'ap:p:' .. req.tok
redis.call('ZREMRANGEBYSCORE', zkey, '-inf', now)
if prev_id ~= '' then redis.call('ZREM', zkey, prev_id) end
if req.max > 0 then
  local n = redis.call('ZCARD', zkey)
  if n >= req.max then
    local first = redis.call('ZRANGE', zkey, 0, 0, 'WITHSCORES')
    return reply({ r = 'TOO_MANY', n = n, retry = tonumber(first[2]) - now, prev_id = prev_id, prev_st = prev_st })
  end
end
local nexp = now + req.ttl
redis.call('DEL', key)
redis.call('HSET', key, 'id', req.nid, 'st', 'pending', 'exp', nexp, 'tok', req.tok, 'why', '')
redis.call('PEXPIREAT', key, nexp + req.ttl)
redis.call('ZADD', zkey, nexp, req.nid)
local last = redis.call('ZRANGE', zkey, -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', zkey, math.max(nexp, tonumber(last[2])))
return reply({ r = 'NEW', id = req.nid, exp = nexp, prev_id = prev_id, prev_st = prev_st })
`;

/**
 * Writes approvals as Postgres records them (a decision, a use, or the reload after Redis lost its
 * data). An entry never overwrites a newer request of the same call; with `missing_only` (reload) it
 * never overwrites anything.
 */
export const MIRROR_LUA = `
local req = cjson.decode(ARGV[1])
local p = req.p
local out = {}
for i, e in ipairs(req.items) do
  local key = p .. 'ap:c:' .. e.ck
  local cur = redis.call('HGET', key, 'id')
  if cur and cur ~= e.id then
    out[i] = 'OTHER'
  elseif cur and req.missing_only then
    out[i] = 'KEEP'
  else
    redis.call('HSET', key, 'id', e.id, 'st', e.st, 'exp', e.exp, 'tok', e.tok, 'why', e.why)
    redis.call('PEXPIREAT', key, e.exp + e.ttl)
    local zkey = p .. 'ap:p:' .. e.tok
    if e.st == 'pending' then
      redis.call('ZADD', zkey, e.exp, e.id)
      local last = redis.call('ZRANGE', zkey, -1, -1, 'WITHSCORES')
      redis.call('PEXPIREAT', zkey, math.max(e.exp, tonumber(last[2])))
    else
      redis.call('ZREM', zkey, e.id)
    end
    out[i] = 'SET'
  end
end
return cjson.encode({ r = out })
`;

/** Takes back a request CHECK_LUA opened when its Postgres record could not be written. */
export const FORGET_LUA = `
local req = cjson.decode(ARGV[1])
local key = req.p .. 'ap:c:' .. req.ck
if redis.call('HGET', key, 'id') == req.id then redis.call('DEL', key) end
redis.call('ZREM', req.p .. 'ap:p:' .. req.tok, req.id)
return cjson.encode({ r = 'OK' })
`;

/** Explain: the latest approval of one exact call, read only (nothing opened, nothing spent). */
export const PEEK_LUA = `
local req = cjson.decode(ARGV[1])
${LUA_NOW}
if redis.call('EXISTS', req.p .. 'epoch') == 0 then return cjson.encode({ r = 'NO_EPOCH', now = now }) end
local cur = redis.call('HMGET', req.p .. 'ap:c:' .. req.ck, 'id', 'st', 'exp', 'why')
if not cur[1] then return cjson.encode({ now = now }) end
return cjson.encode({ id = cur[1], st = cur[2], exp = tonumber(cur[3] or '0'), why = cur[4] or '', now = now })
`;
