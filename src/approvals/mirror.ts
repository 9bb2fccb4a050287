import { defineJsonScript, type JsonScript } from '../limits/lua.js';
import type { RedisHandle } from '../redis/client.js';
import { CHECK_LUA, FORGET_LUA, MIRROR_LUA, PEEK_LUA } from './scripts.js';

// Talks to Redis only (scripts.ts has the key layout); Postgres is the record (store.ts).

export type CheckAnswer =
  | { r: 'NO_EPOCH' | 'DEFER'; now: number }
  | { r: 'PENDING' | 'APPROVED'; id: string; exp: number; now: number }
  | { r: 'REJECTED'; id: string; exp: number; why: string; now: number }
  | { r: 'TOO_MANY'; n: number; retry: number; prev_id: string; prev_st: '' | 'expired' | 'used'; now: number }
  | { r: 'NEW'; id: string; exp: number; prev_id: string; prev_st: '' | 'expired' | 'used'; now: number };

export type MirrorState = 'pending' | 'approved' | 'rejected' | 'used';

/** The latest approval of one call as Redis holds it (`id` absent: none), with Redis time. */
export type PeekAnswer = { r: 'NO_EPOCH'; now: number } | { now: number; id?: undefined } | { now: number; id: string; st: MirrorState; exp: number; why: string };

export interface MirrorEntry {
  callKey: string;
  id: string;
  state: MirrorState;
  /** ms since the epoch. */
  expiresAt: number;
  tokenId: string;
  ttlMs: number;
  why?: string;
}

/** The Redis answer of a mirror write, per entry: written, kept (reload), or a newer request holds the call. */
export type MirrorResult = 'SET' | 'KEEP' | 'OTHER';

export class ApprovalMirror {
  private readonly checkScript: JsonScript;
  private readonly mirrorScript: JsonScript;
  private readonly forgetScript: JsonScript;
  private readonly peekScript: JsonScript;

  constructor(private readonly redis: RedisHandle) {
    this.checkScript = defineJsonScript(redis.redis, 'ksApprovalCheck', CHECK_LUA);
    this.mirrorScript = defineJsonScript(redis.redis, 'ksApprovalMirror', MIRROR_LUA);
    this.forgetScript = defineJsonScript(redis.redis, 'ksApprovalForget', FORGET_LUA);
    this.peekScript = defineJsonScript(redis.redis, 'ksApprovalPeek', PEEK_LUA);
  }

  async check(a: { callKey: string; tokenId: string; sessionId: string; newId: string; ttlMs: number; maxPending: number }): Promise<CheckAnswer> {
    const raw = await this.checkScript({ p: this.redis.prefix, ck: a.callKey, tok: a.tokenId, sid: a.sessionId, nid: a.newId, ttl: a.ttlMs, max: a.maxPending });
    return JSON.parse(raw) as CheckAnswer;
  }

  async peek(callKey: string): Promise<PeekAnswer> {
    return JSON.parse(await this.peekScript({ p: this.redis.prefix, ck: callKey })) as PeekAnswer;
  }

  async write(entries: readonly MirrorEntry[], missingOnly = false): Promise<MirrorResult[]> {
    const out: MirrorResult[] = [];
    // Chunks keep each script short: Redis serves nobody else while one runs.
    for (let i = 0; i < entries.length; i += 500) {
      const items = entries.slice(i, i + 500).map((e) => ({ ck: e.callKey, id: e.id, st: e.state, exp: e.expiresAt, tok: e.tokenId, ttl: e.ttlMs, why: (e.why ?? '').slice(0, 500) }));
      const raw = await this.mirrorScript({ p: this.redis.prefix, missing_only: missingOnly, items });
      const parsed = JSON.parse(raw) as { r: MirrorResult[] | Record<string, never> };
      out.push(...(Array.isArray(parsed.r) ? parsed.r : []));
    }
    return out;
  }

  async forget(a: { callKey: string; id: string; tokenId: string }): Promise<void> {
    await this.forgetScript({ p: this.redis.prefix, ck: a.callKey, id: a.id, tok: a.tokenId });
  }
}
