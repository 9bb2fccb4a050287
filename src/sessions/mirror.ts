import { defineJsonScript, type JsonScript } from '../limits/lua.js';
import { UNREADABLE_SESSION_STATE, UNREADABLE_TOKEN_HALT } from '../limits/scripts.js';
import { type CallSummary, parseCallSummaries } from '../limits/summary.js';
import type { RedisHandle } from '../redis/client.js';
import { CLOSE_LUA, FORGET_LUA, HALT_LUA, OPEN_LUA, PUSH_CALL_LUA, RELOAD_LUA, RESUME_LUA, SWEEP_LUA } from './scripts.js';
import type { SessionRow } from './store.js';

// The Redis side of sessions and halts: what the gate script reads. Postgres is the record
// (store.ts); this class only talks to Redis, one atomic script per operation.

export type OpenAnswer =
  | { r: 'OK'; st: 'active' | 'halted'; trg: string; open: number; new: number; now: number }
  | { r: 'NO_EPOCH'; now: number }
  | { r: 'TOO_MANY_OPEN'; n: number; now: number }
  | { r: 'TOO_MANY_NEW'; n: number; retry: number; now: number };

/** `th`: with HALTED, the token's own halt trigger when the token is halted too ('' when it is not). */
export type CloseAnswer = { r: 'CLOSED' } | { r: 'NO_EPOCH' } | { r: 'NOT_OWNER' } | { r: 'HALTED' | 'TOKEN_HALTED'; trg: string; th?: string };

export interface MirrorHalt {
  tokenId: string;
  sessionId: string | null;
  trigger: string;
  haltToken: boolean;
  /** The session's fields from Postgres, so a halt can be re-created when Redis lost the session. */
  fields?: { read_only: boolean; servers: string[] | null; purpose: string };
}

export const PURPOSE_MAX_IN_REDIS = 500;

const serversField = (servers: string[] | null): string => (servers ? JSON.stringify(servers) : '');

/** The purpose cut for Redis, never between the halves of a surrogate pair (the scripts' cjson refuses a lone one). */
function purposeField(purpose: string): string {
  if (purpose.length <= PURPOSE_MAX_IN_REDIS) return purpose;
  const cut = purpose.slice(0, PURPOSE_MAX_IN_REDIS);
  const last = cut.charCodeAt(cut.length - 1);
  return last >= 0xd800 && last <= 0xdbff ? cut.slice(0, -1) : cut;
}

const fieldsOf = (f: { read_only: boolean; servers: string[] | null; purpose: string }) => ({
  ro: f.read_only ? '1' : '0',
  srv: serversField(f.servers),
  pur: purposeField(f.purpose),
});

/** A halt as Redis enforces it (what the gate reads), whatever Postgres holds. */
export interface EnforcedHalt {
  sessionId: string;
  tokenId: string;
  trigger: string;
}

/** A session of a token that the gate would still find (see `openSessionsOf`). */
export interface OpenSessionInRedis {
  sessionId: string;
  state: 'active' | 'halted';
  /** Redis time (ms) of its last call, else of its opening; 0: unknown. */
  lastActiveAt: number;
}

export class SessionMirror {
  private readonly openScript: JsonScript;
  private readonly haltScript: JsonScript;
  private readonly resumeScript: JsonScript;
  private readonly reloadScript: JsonScript;
  private readonly sweepScript: JsonScript;
  private readonly pushScript: JsonScript;
  private readonly closeScript: JsonScript;
  private readonly forgetScript: JsonScript;

  constructor(
    readonly redis: RedisHandle,
    private readonly idleMs: number,
    private readonly lastCallsKept = 10,
  ) {
    const r = redis.redis;
    this.openScript = defineJsonScript(r, 'ksSessionOpen', OPEN_LUA);
    this.haltScript = defineJsonScript(r, 'ksSessionHalt', HALT_LUA);
    this.resumeScript = defineJsonScript(r, 'ksSessionResume', RESUME_LUA);
    this.reloadScript = defineJsonScript(r, 'ksSessionReload', RELOAD_LUA);
    this.sweepScript = defineJsonScript(r, 'ksSessionSweep', SWEEP_LUA);
    this.pushScript = defineJsonScript(r, 'ksSessionPush', PUSH_CALL_LUA);
    this.closeScript = defineJsonScript(r, 'ksSessionClose', CLOSE_LUA);
    this.forgetScript = defineJsonScript(r, 'ksSessionForget', FORGET_LUA);
  }

  get prefix(): string {
    return this.redis.prefix;
  }

  async open(a: { tokenId: string; sessionId: string; readOnly: boolean; servers: string[] | null; purpose: string; maxOpen: number; maxNewPerHour: number; hourMs?: number }): Promise<OpenAnswer> {
    const f = fieldsOf({ read_only: a.readOnly, servers: a.servers, purpose: a.purpose });
    const raw = await this.openScript({
      p: this.prefix,
      tok: a.tokenId,
      sid: a.sessionId,
      ...f,
      idle: this.idleMs,
      maxOpen: a.maxOpen,
      maxNew: a.maxNewPerHour,
      hour: a.hourMs ?? 3_600_000,
    });
    return JSON.parse(raw) as OpenAnswer;
  }

  /** Applies halts; returns, per halt, whether the session was this token's and is now halted. */
  async halt(halts: MirrorHalt[]): Promise<boolean[]> {
    const out: boolean[] = [];
    // Chunks keep each script short: Redis serves nobody else while one runs.
    for (let i = 0; i < halts.length; i += 500) {
      const raw = await this.haltScript({
        p: this.prefix,
        halts: halts.slice(i, i + 500).map((h) => ({
          tok: h.tokenId,
          sid: h.sessionId ?? '',
          trg: h.trigger,
          htok: h.haltToken ? 1 : 0,
          ...(h.fields ? { f: fieldsOf(h.fields) } : {}),
        })),
      });
      const bound = (JSON.parse(raw) as { bound: number[] | Record<string, never> }).bound;
      if (Array.isArray(bound)) out.push(...bound.map((b) => b === 1));
    }
    return out;
  }

  /** Closes the token's session in Redis unless it or the token is halted (CLOSE_LUA). */
  async close(tokenId: string, sessionId: string): Promise<CloseAnswer> {
    return JSON.parse(await this.closeScript({ p: this.prefix, tok: tokenId, sid: sessionId })) as CloseAnswer;
  }

  async resume(tokenId: string, sessionIds: string[], liftTokenHalt: boolean): Promise<string[]> {
    const raw = await this.resumeScript({ p: this.prefix, tok: tokenId, sids: sessionIds, token: liftTokenHalt ? 1 : 0, idle: this.idleMs });
    const resumed = (JSON.parse(raw) as { resumed: string[] | Record<string, never> }).resumed;
    return Array.isArray(resumed) ? resumed : [];
  }

  async reloadSessions(sessions: SessionRow[], tokenHalts: Array<{ token_id: string; trigger: string }>): Promise<void> {
    await this.reloadScript({
      p: this.prefix,
      idle: this.idleMs,
      sessions: sessions.map((s) => ({ id: s.id, tok: s.token_id, st: s.state, trg: s.trigger ?? '', ...fieldsOf(s) })),
      tokens: tokenHalts.map((h) => ({ tok: h.token_id, trg: h.trigger })),
    });
  }

  /** Session ids Redis no longer holds; undefined while the epoch is missing (nothing can be concluded). */
  /** Which of these sessions Redis no longer holds, and the state epoch that answer belongs to (undefined: no epoch). */
  async gone(ids: string[]): Promise<{ gone: string[]; epoch: string } | undefined> {
    const res = JSON.parse(await this.sweepScript({ p: this.prefix, ids })) as { noepoch?: number; gone?: string[] | Record<string, never>; epoch?: string };
    if (res.noepoch || res.epoch === undefined) return undefined;
    return { gone: Array.isArray(res.gone) ? res.gone : [], epoch: res.epoch };
  }

  /** Removes closed sessions (whose hash is gone) from their tokens' open-session sets; how many were removed. */
  async forget(sessions: Array<{ tokenId: string; sessionId: string }>): Promise<number> {
    if (sessions.length === 0) return 0;
    const raw = await this.forgetScript({ p: this.prefix, sessions: sessions.map((s) => ({ tok: s.tokenId, sid: s.sessionId })) });
    return (JSON.parse(raw) as { removed: number }).removed;
  }

  /** The state epoch's value (undefined while Redis's state is missing or being reloaded). */
  async epochValue(): Promise<string | undefined> {
    return (await this.redis.redis.get(this.redis.key('epoch'))) ?? undefined;
  }

  async pushCall(tokenId: string, sessionId: string, entry: Omit<CallSummary, 'at'>): Promise<boolean> {
    const raw = await this.pushScript({ p: this.prefix, tok: tokenId, sid: sessionId, e: entry, keep: this.lastCallsKept, idle: this.idleMs });
    return (JSON.parse(raw) as { pushed: number }).pushed === 1;
  }

  async lastCalls(sessionId: string, n: number): Promise<CallSummary[]> {
    const raw = await this.redis.redis.lrange(this.redis.key('lc', sessionId), 0, Math.max(0, n - 1));
    return parseCallSummaries(raw);
  }

  /** The session's halt if Redis enforces one (its hash says halted, or holds a state the gate holds as halted). */
  async sessionHalt(sessionId: string): Promise<EnforcedHalt | undefined> {
    const [tok, st, trg] = await this.redis.redis.hmget(this.redis.key('s', sessionId), 'tok', 'st', 'trg');
    return tok ? enforcedSessionHalt(sessionId, tok, st, trg) : undefined;
  }

  /**
   * The trigger of the token's halt if Redis enforces one. A halt key that is not a string still halts in
   * the gate script: it reads as UNREADABLE_TOKEN_HALT, so a resume finds it and lifts it.
   */
  async tokenHalt(tokenId: string): Promise<string | null> {
    try {
      return await this.redis.redis.get(this.redis.key('th', tokenId));
    } catch (err) {
      if (/^WRONGTYPE/.test((err as Error).message)) return UNREADABLE_TOKEN_HALT;
      throw err;
    }
  }

  /**
   * What Redis enforces for a token: its token halt's trigger (null: none) and its sessions halted in
   * Redis. Resumes compare it with Postgres, so a halt whose record never reached Postgres can be lifted.
   */
  async haltsOf(tokenId: string): Promise<{ tokenTrigger: string | null; sessions: EnforcedHalt[] }> {
    const r = this.redis.redis;
    const [tokenTrigger, members] = await Promise.all([this.tokenHalt(tokenId), r.zrange(this.redis.key('so', tokenId), 0, -1)]);
    const sessions: EnforcedHalt[] = [];
    if (members.length > 0) {
      const pipe = r.pipeline();
      for (const id of members) pipe.hmget(this.redis.key('s', id), 'tok', 'st', 'trg');
      const replies = (await pipe.exec()) ?? [];
      replies.forEach(([err, reply], i) => {
        if (err) throw err;
        const [tok, st, trg] = reply as Array<string | null>;
        const halt = tok === tokenId ? enforcedSessionHalt(members[i]!, tokenId, st, trg) : undefined;
        if (halt) sessions.push(halt);
      });
    }
    return { tokenTrigger, sessions };
  }

  /**
   * The token's sessions a call can still name, as the gate script sees them: the hash is there, is this
   * token's and is not closed (halted ones included: their calls are denied, not unknown). `lastActiveAt`
   * is the Redis time of the newest entry on the session's last-calls list, else of its opening (0 for a
   * session reloaded from Postgres, whose opening Redis does not know).
   */
  async openSessionsOf(tokenId: string): Promise<OpenSessionInRedis[]> {
    const r = this.redis.redis;
    const members = await r.zrange(this.redis.key('so', tokenId), 0, -1, 'WITHSCORES');
    if (members.length === 0) return [];
    const pipe = r.pipeline();
    for (let i = 0; i < members.length; i += 2) {
      pipe.hmget(this.redis.key('s', members[i]!), 'tok', 'st');
      pipe.lindex(this.redis.key('lc', members[i]!), 0);
    }
    const replies = (await pipe.exec()) ?? [];
    const out: OpenSessionInRedis[] = [];
    for (let i = 0; i < members.length; i += 2) {
      const [hashErr, hash] = replies[i] ?? [new Error('no reply')];
      const [listErr, newest] = replies[i + 1] ?? [new Error('no reply')];
      if (hashErr) throw hashErr;
      if (listErr) throw listErr;
      const [tok, st] = hash as Array<string | null>;
      if (tok !== tokenId || st === 'closed') continue;
      const lastCall = typeof newest === 'string' ? parseCallSummaries([newest])[0] : undefined;
      const openedAt = Number(members[i + 1]) || 0;
      out.push({ sessionId: members[i]!, state: st === 'halted' ? 'halted' : 'active', lastActiveAt: Math.max(openedAt, typeof lastCall?.at === 'number' ? lastCall.at : 0) });
    }
    return out;
  }

  /**
   * How many sessions the token opened in the current window of `hourMs` (Redis time), as OPEN_LUA counts
   * them (`sn:<token>:<window index>`), and how long until the window ends. Read only.
   */
  async openedInWindow(tokenId: string, hourMs = 3_600_000): Promise<{ opened: number; msLeft: number; now: number }> {
    const [seconds, micros] = await this.redis.redis.time();
    const now = Number(seconds) * 1000 + Math.floor(Number(micros) / 1000);
    const idx = Math.floor(now / hourMs);
    const opened = Number(await this.redis.redis.get(this.redis.key('sn', tokenId, String(idx)))) || 0;
    return { opened, msLeft: (idx + 1) * hourMs - now, now };
  }

  async epochExists(): Promise<boolean> {
    return (await this.redis.redis.exists(this.redis.key('epoch'))) === 1;
  }
}

/**
 * A session's halt as the gate script enforces it: `halted`, or a state that is neither active nor closed
 * (missing, or written by something else), which the script holds as halted (UNREADABLE_SESSION_STATE).
 */
function enforcedSessionHalt(sessionId: string, tokenId: string, st: string | null | undefined, trg: string | null | undefined): EnforcedHalt | undefined {
  if (st === 'active' || st === 'closed') return undefined;
  return { sessionId, tokenId, trigger: st === 'halted' ? (trg ?? '') : UNREADABLE_SESSION_STATE };
}
