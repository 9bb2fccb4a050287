import { LRUCache } from 'lru-cache';
import type { HaltTrigger, LimitUse, SessionView } from '../decisions/types.js';
import type { RedisHandle } from '../redis/client.js';
import { type RedisFailure, redisFailure } from '../redis/failure.js';
import { encodeArgs, RawScript } from '../redis/raw-script.js';
import type { Capability } from '../tokens/scopes.js';
import { type CounterSpec, counterLabel, countersFor, type GateLimits, type GateWindows, REAL_WINDOWS, usageText } from './limits.js';
import { defineJsonScript, type JsonScript } from './lua.js';
import { GATE_LUA, OUTCOME_LUA, UNDO_LUA } from './scripts.js';
import { type CallOutcome, type CallSummary, parseCallSummaries, summarizeArguments, summarizeTool } from './summary.js';

// The Redis gate: runs the one Lua script for a call and turns its answer into typed data. It knows
// nothing about HTTP or the pipeline; step.ts adapts it to a PipelineStep.

export interface GateOptions {
  /** How long an idle session lives (its Redis keys expire; the sweeper then marks it closed). */
  sessionIdleMs: number;
  /** How long `decisionMeta(id)` can find an allowed call, for its RESULT. */
  decisionTtlMs: number;
  /** Minute and day window lengths; tests shorten them. */
  windows?: GateWindows;
  /** Entries kept on a session's last-calls list. */
  lastCallsKept?: number;
  /** Called (not awaited) when the state epoch is missing, so the service reloads from Postgres at once. */
  onMissingEpoch?: () => void;
  /**
   * False while this replica has not checked, since its Redis connection (re)opened, that Redis holds
   * every halt and kill in force (StateEpoch.stateVerified): the call is denied without a round trip
   * (`UNVERIFIED`) and onMissingEpoch asks for the check.
   */
  stateVerified?: () => boolean;
}

export interface GateRequest {
  decisionId: string;
  tokenId: string;
  sessionId: string;
  server: string;
  tool: string;
  capability: Capability;
  /** Resource identities for cascade detection; empty means server/tool. */
  resourceIds: readonly string[];
  arguments: Record<string, unknown>;
  /**
   * Treated as immutable, like `haltTokenOn`: the gate keeps the arguments it encoded from this object
   * while the same object comes back (pass a new object to change limits; the policy does on reload).
   */
  limits: GateLimits;
  /** Triggers that halt the token and not only the session (policy `halt_token_on`). */
  haltTokenOn: ReadonlySet<HaltTrigger> | readonly HaltTrigger[];
  /** Break-glass kill keys (full Redis key names, string values holding the reason). */
  killKeys?: readonly string[];
  /** Explain: check everything, change nothing. */
  dryRun?: boolean;
}

export type GateReason =
  | 'OK'
  | 'UNAVAILABLE'
  | 'NO_EPOCH'
  | 'UNVERIFIED'
  | 'KILL'
  | 'SESSION_UNKNOWN'
  | 'SESSION_HALTED'
  | 'TOKEN_HALTED'
  | 'READ_ONLY'
  | 'UNDECLARED_SERVER'
  | 'LIMIT'
  | 'CASCADE';

/** A counter that reached pause_at_percent for the first time in its window: raise one alert. */
export interface LimitAlert {
  kind: 'LIMIT_WARNING';
  limit: string;
  used: number;
  max: number;
  percent: number;
  message: string;
}

export interface ExceededLimit {
  name: string;
  label: string;
  used: number;
  max: number;
  /** Until the window resets (0 for session totals, which halt instead). */
  retryAfterMs: number;
  halts: boolean;
}

export interface GateOutcome {
  allowed: boolean;
  reason: GateReason;
  /** Redis time of the check (ms). */
  now: number;
  session?: SessionView;
  limits: Record<string, LimitUse>;
  warnings: string[];
  alerts: LimitAlert[];
  /** A kill-switch trigger this call fired (the session is already halted in Redis). */
  trigger?: HaltTrigger;
  /** True when that trigger also halted the token. */
  tokenHalted?: boolean;
  /** For SESSION_HALTED / TOKEN_HALTED: the trigger of the halt in force. */
  heldTrigger?: string;
  exceeded?: ExceededLimit;
  kill?: { key: string; reason: string };
  cascade?: { writes: number; resources: string[] };
  /** On a halt: the last 3 calls (newest first), including the one that fired it. */
  lastCalls?: CallSummary[];
  /** For UNAVAILABLE: what failed (the driver's words, for the log only). */
  error?: string;
  /** For UNAVAILABLE: what kind of failure, in words a denial may carry (redis/failure.ts). */
  failure?: RedisFailure;
  /** For UNAVAILABLE: the driver's error itself, for the log. */
  cause?: unknown;
}

export interface DecisionMeta {
  tokenId: string;
  sessionId: string;
  server: string;
  tool: string;
  capability: Capability;
  /** Redis time (ms) of the allow. */
  at: number;
}

/** The script's reply to an allow (see GATE_LUA): flat, the counters' uses last, in counter order. */
type LuaOkReply = ['OK', now: number, ro: string, srv: string, st: string, trg: string, pur: string, alertCount: number, ...rest: number[]];

/** The script's reply to a denial, position by position (see GATE_LUA). */
type LuaReply = [
  reason: Exclude<GateReason, 'UNAVAILABLE' | 'OK'>,
  now: number,
  used: number[],
  /** Always empty: alerts come only with an allow. */
  alerts: number[],
  session: string[],
  trigger: string,
  tokenHalted: number,
  lastCalls: string[],
  counter: number,
  retryMs: number,
  killKey: string,
  killReason: string,
  cascadeWrites: number,
  cascadeResources: string[],
];

// Separates resources inside one cascade-window entry; removed from resource names.
const UNIT_SEPARATOR = String.fromCharCode(31);
const CASCADE_KEEP_MIN = 20;
const TOKEN_WINDOW_TTL_MS = 86_400_000;
/** How long a decision's keys stay once its result is recorded: for a gateway's retry of that report. */
const RESULT_KEEP_MS = 300_000;

/** The resources a call names for cascade detection (server/tool when none), as `check` sends them. */
function resourcesOf(req: GateRequest): string[] {
  const resources = req.resourceIds.length > 0 ? req.resourceIds : [`${req.server}/${req.tool}`];
  return resources.map((r) => r.replaceAll(UNIT_SEPARATOR, ''));
}

function sessionViewOf(id: string, v: string[]): SessionView {
  const [ro, srv, st, trg, pur] = v;
  let servers: string[] | null = null;
  if (srv) {
    try {
      servers = JSON.parse(srv) as string[];
    } catch {
      servers = null;
    }
  }
  const state = st === 'halted' || st === 'closed' ? st : 'active';
  return { id, state, trigger: trg ? (trg as HaltTrigger) : null, read_only: ro === '1', servers, purpose: pur ?? '' };
}

/** The cached, encoded arguments of one (token, session, server, capability) and what they were built from. */
interface FixedParts {
  limits: GateLimits;
  haltTokenOn: GateRequest['haltTokenOn'];
  killKeys: readonly string[];
  counterSpecs: CounterSpec[];
  before: string;
  kills: string;
  counters: string;
  argCount: number;
}

function sameStrings(a: readonly string[], b: readonly string[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

export class RedisGate {
  private readonly gateScript: RawScript;
  private readonly fixed = new LRUCache<string, FixedParts>({ max: 5_000 });
  private readonly runOutcome: JsonScript;
  private readonly runUndo: JsonScript;
  readonly windows: GateWindows;
  private readonly keep: number;

  constructor(
    private readonly redis: RedisHandle,
    private readonly opts: GateOptions,
  ) {
    this.gateScript = new RawScript(redis.redis, GATE_LUA);
    this.runOutcome = defineJsonScript(redis.redis, 'ksGateOutcome', OUTCOME_LUA);
    this.runUndo = defineJsonScript(redis.redis, 'ksGateUndo', UNDO_LUA);
    this.windows = opts.windows ?? REAL_WINDOWS;
    this.keep = opts.lastCallsKept ?? 10;
  }

  /** Counters the script will check for this request (exposed for explain and tests). */
  counters(req: GateRequest): CounterSpec[] {
    return countersFor(req, req.limits, this.windows);
  }

  /** One round trip. Never throws: Redis down or slow is `UNAVAILABLE` (the caller denies). */
  async check(req: GateRequest): Promise<GateOutcome> {
    if (this.opts.stateVerified && !this.opts.stateVerified()) {
      this.opts.onMissingEpoch?.();
      // No connection at all (down, or never reached since start): say so, as /readyz does, rather than
      // that the state is being checked, which happens only once Redis answers.
      const status = this.redis.redis.status;
      if (status !== 'ready') {
        return { allowed: false, reason: 'UNAVAILABLE', now: Date.now(), limits: {}, warnings: [], alerts: [], error: `no connection to Redis (connection ${status})`, failure: { kind: 'unreachable' } };
      }
      return { allowed: false, reason: 'UNVERIFIED', now: Date.now(), limits: {}, warnings: [], alerts: [] };
    }
    const fixed = this.fixedPartsOf(req);
    const resources = req.resourceIds.length > 0 ? req.resourceIds : [`${req.server}/${req.tool}`];
    const resourceArgs: string[] = new Array(resources.length + 1);
    resourceArgs[0] = String(resources.length);
    for (let i = 0; i < resources.length; i++) resourceArgs[i + 1] = resources[i]!.replaceAll(UNIT_SEPARATOR, '');
    // The list entry and the decision's metadata are encoded here; the script only appends the verdict.
    // The tool name as shown and recorded (masked: a gateway may send one holding a credential).
    const tool = summarizeTool(req.tool);
    const head = JSON.stringify({ id: req.decisionId, server: req.server, tool, args: summarizeArguments(req.arguments) }).slice(0, -1);
    const meta = JSON.stringify({ tok: req.tokenId, sid: req.sessionId, srv: req.server, tool, cap: req.capability, at: Date.now() });
    const encoded = fixed.before + encodeArgs([req.decisionId, head, meta]) + fixed.kills + encodeArgs(resourceArgs) + fixed.counters;
    try {
      const reply = (await this.gateScript.runEncoded(fixed.argCount + 3 + resourceArgs.length, encoded)) as LuaReply | LuaOkReply;
      if (!Array.isArray(reply)) {
        return { allowed: false, reason: 'UNAVAILABLE', now: Date.now(), limits: {}, warnings: [], alerts: [], error: 'the gate script gave no list', failure: { kind: 'error', code: 'UNEXPECTED_REPLY' } };
      }
      return reply[0] === 'OK' ? this.interpretOk(req, fixed.counterSpecs, reply as LuaOkReply) : this.interpret(req, fixed.counterSpecs, reply as LuaReply);
    } catch (err) {
      return { allowed: false, reason: 'UNAVAILABLE', now: Date.now(), limits: {}, warnings: [], alerts: [], error: (err as Error).message, failure: redisFailure(err), cause: err };
    }
  }

  /**
   * The script's arguments that depend only on the token, session, server, capability, limits, halting
   * policy and kill keys (all but the decision's own id, list entry, metadata and resources), encoded once
   * and kept while those stay the same: most decisions of a session repeat them.
   */
  private fixedPartsOf(req: GateRequest): FixedParts {
    const kills = req.killKeys ?? [];
    const key = `${req.tokenId}\u0000${req.sessionId}\u0000${req.server}\u0000${req.capability}\u0000${req.dryRun ? 1 : 0}`;
    const cached = this.fixed.get(key);
    if (cached && cached.limits === req.limits && cached.haltTokenOn === req.haltTokenOn && sameStrings(cached.killKeys, kills)) return cached;
    const counterSpecs = this.counters(req);
    const haltTokenOn = Array.isArray(req.haltTokenOn) ? req.haltTokenOn : [...(req.haltTokenOn as ReadonlySet<HaltTrigger>)];
    const cascade = req.limits.cascade ?? { threshold: 0, windowCalls: 0 };
    const before: Array<string | number> = [
      this.redis.prefix,
      req.dryRun ? 1 : 0,
      req.tokenId,
      req.sessionId,
      req.server,
      req.capability,
      req.limits.pauseAtPercent && req.limits.pauseAtPercent > 0 ? req.limits.pauseAtPercent : 0,
      Math.max(0, cascade.threshold),
      Math.max(0, cascade.windowCalls),
      this.keep,
      this.opts.sessionIdleMs,
      Math.max(CASCADE_KEEP_MIN, cascade.windowCalls),
      TOKEN_WINDOW_TTL_MS,
      this.opts.decisionTtlMs,
    ];
    // (decision id, list entry head, metadata: per decision, between `before` and `kills`)
    const killArgs: Array<string | number> = [`,${haltTokenOn.join(',')},`, kills.length, ...kills];
    // (resources: per decision, between `kills` and `counters`)
    const counterArgs: Array<string | number> = [counterSpecs.length];
    for (const c of counterSpecs) counterArgs.push(c.k, c.f ?? '', c.max, c.w, c.t, c.h);
    const parts: FixedParts = {
      limits: req.limits,
      haltTokenOn: req.haltTokenOn,
      killKeys: kills,
      counterSpecs,
      before: encodeArgs(before),
      kills: encodeArgs(killArgs),
      counters: encodeArgs(counterArgs),
      argCount: before.length + killArgs.length + counterArgs.length,
    };
    this.fixed.set(key, parts);
    return parts;
  }

  private interpretOk(req: GateRequest, counters: CounterSpec[], r: LuaOkReply): GateOutcome {
    const out: GateOutcome = { allowed: true, reason: 'OK', now: r[1], limits: {}, warnings: [], alerts: [] };
    out.session = sessionViewOf(req.sessionId, [r[2], r[3], r[4], r[5], r[6]]);
    const n = r as unknown as readonly number[];
    const alertCount = r[7];
    const usedAt = 8 + alertCount;
    const pct = req.limits.pauseAtPercent ?? 0;
    for (let i = 0; i < counters.length; i++) {
      const c = counters[i]!;
      const u = n[usedAt + i];
      if (u === undefined) continue;
      out.limits[c.n] = { used: u, max: c.max };
      if (pct > 0 && u * 100 >= c.max * pct) out.warnings.push(usageText(u, c.max, counterLabel(c.n, req.server)));
    }
    for (let a = 0; a < alertCount; a++) {
      const i = n[8 + a]!;
      const c = counters[i - 1];
      const u = n[usedAt + i - 1];
      if (!c || u === undefined) continue;
      const text = usageText(u, c.max, counterLabel(c.n, req.server));
      out.alerts.push({ kind: 'LIMIT_WARNING', limit: c.n, used: u, max: c.max, percent: Math.round((u * 100) / c.max), message: `Past ${pct}%: ${text}` });
    }
    return out;
  }

  private interpret(req: GateRequest, counters: CounterSpec[], r: LuaReply): GateOutcome {
    const [reason, now, used, , session, trigger, tokenHalted, last, counter, retryMs, killKey, killReason, cascadeWrites, cascadeResources] = r;
    // A denial raises no usage warning or alert (those come only with an allow, interpretOk).
    const out: GateOutcome = { allowed: false, reason, now, limits: {}, warnings: [], alerts: [] };
    if (reason === 'NO_EPOCH') this.opts.onMissingEpoch?.();
    if (session.length > 0) out.session = sessionViewOf(req.sessionId, session);
    counters.forEach((c, i) => {
      const u = used[i];
      if (u !== undefined) out.limits[c.n] = { used: u, max: c.max };
    });
    if (reason === 'SESSION_HALTED' || reason === 'TOKEN_HALTED') {
      out.heldTrigger = trigger;
      if (reason === 'SESSION_HALTED' && tokenHalted === 1) out.tokenHalted = true;
    }
    else if (trigger) {
      out.trigger = trigger as HaltTrigger;
      out.tokenHalted = tokenHalted === 1;
    }
    if (last.length > 0) out.lastCalls = parseCallSummaries(last);
    if (reason === 'LIMIT' && counter > 0) {
      const c = counters[counter - 1];
      if (c) out.exceeded = { name: c.n, label: counterLabel(c.n, req.server), used: used[counter - 1] ?? c.max, max: c.max, retryAfterMs: retryMs, halts: c.h === 1 };
    }
    if (reason === 'KILL') out.kill = { key: killKey, reason: killReason };
    if (reason === 'CASCADE') out.cascade = { writes: cascadeWrites, resources: cascadeResources };
    return out;
  }

  /** Metadata of an allowed call, for POST /v1/decisions/:id/result; undefined when unknown or expired. Throws if Redis is unavailable. */
  async decisionMeta(decisionId: string): Promise<DecisionMeta | undefined> {
    const raw = await this.redis.redis.get(this.redis.key('d', decisionId));
    if (!raw) return undefined;
    const m = JSON.parse(raw) as { tok: string; sid: string; srv: string; tool: string; cap: Capability; at: number };
    return { tokenId: m.tok, sessionId: m.sid, server: m.srv, tool: m.tool, capability: m.cap, at: m.at };
  }

  /**
   * Claims the one RESULT of a decision: stores `record` (what the first report was and answered) unless a
   * report was claimed before, and returns that earlier record instead (undefined: this report is the
   * first). Kept as long as the decision's metadata can be. Throws if Redis is unavailable.
   */
  async claimResult(decisionId: string, record: string): Promise<string | undefined> {
    // Once a decision has its result, its two keys are only there to answer a gateway's retry of that
    // report: kept RESULT_KEEP_MS, not the full DECISION_META_TTL_S (an allow's keys are most of Redis's
    // memory under load: ~600 B for an hour each). LT: never lengthened.
    const keep = Math.min(RESULT_KEEP_MS, this.opts.decisionTtlMs);
    const [[claimErr, earlier] = [null, null], [expireErr] = [null]] =
      (await this.redis.redis
        .multi()
        .set(this.redis.key('dr', decisionId), record, 'PX', keep, 'NX', 'GET')
        .pexpire(this.redis.key('d', decisionId), keep, 'LT')
        .exec()) ?? [];
    if (claimErr) throw claimErr;
    if (expireErr) throw expireErr;
    return (earlier as string | null) ?? undefined;
  }

  /** Gives back a claim whose report could not be carried out, so a retry of it is not taken for a repeat. */
  async releaseResult(decisionId: string): Promise<void> {
    await this.redis.redis.del(this.redis.key('dr', decisionId));
  }

  /**
   * The call `check` allowed at Redis time `now` was denied after all (`code`): gives back what the check
   * spent for it (counters, the cascade-window entry, the decision's metadata) and marks its last-calls
   * entry denied. Returns false when there was nothing to undo (already undone, or expired). Throws if
   * Redis is unavailable.
   */
  async undo(req: GateRequest, now: number, code: string): Promise<boolean> {
    const ctr = this.fixedPartsOf(req).counterSpecs.map((c) => [c.k, c.f ?? '', c.w]);
    const cascadeOn = (req.limits.cascade?.threshold ?? 0) > 0;
    const cas = !cascadeOn ? '' : req.capability === 'read' ? 'r' : `w${UNIT_SEPARATOR}${resourcesOf(req).join(UNIT_SEPARATOR)}`;
    // Written into the list entry as text by the script: a code is an identifier (DESIGN.md §3).
    const listed = /^[A-Z][A-Z_]{0,63}$/.test(code) ? code : 'DENIED';
    const res = JSON.parse(await this.runUndo({ p: this.redis.prefix, dec: req.decisionId, sid: req.sessionId, tok: req.tokenId, code: listed, now, keep: this.keep, ctr, cas })) as { undone: number };
    return res.undone === 1;
  }

  /**
   * After a check whose reply never came (a timeout: the script may still have run in Redis): gives back
   * what it counted if it allowed (undo with the allow's own time), and reads whether the session or the
   * token is now halted in Redis, so a halt the script fired can be recorded. Undefined fields: not halted.
   */
  async afterLostReply(req: GateRequest): Promise<{ undone: boolean; sessionTrigger?: string; tokenTrigger?: string }> {
    const undone = await this.undo(req, 0, 'DEPENDENCY_UNAVAILABLE');
    const r = this.redis.redis;
    const [[owner, state, trigger], tokenTrigger] = await Promise.all([
      r.hmget(this.redis.key('s', req.sessionId), 'tok', 'st', 'trg'),
      r.get(this.redis.key('th', req.tokenId)),
    ]);
    const out: { undone: boolean; sessionTrigger?: string; tokenTrigger?: string } = { undone };
    if (owner === req.tokenId && state === 'halted' && trigger) out.sessionTrigger = trigger;
    if (tokenTrigger) out.tokenTrigger = tokenTrigger;
    return out;
  }

  /** Attaches a call's outcome to its entry on the session's last-calls list. Returns false if the call is no longer listed. */
  async recordOutcome(decisionId: string, outcome: CallOutcome): Promise<boolean> {
    const res = JSON.parse(await this.runOutcome({ p: this.redis.prefix, dec: decisionId, o: outcome, keep: this.keep })) as { found: number };
    return res.found === 1;
  }
}
