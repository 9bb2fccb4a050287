import type { Capability } from '../tokens/scopes.js';

// Limit numbers for one call, and the counters they become in the gate script. The numbers come from
// the policy file (the lead wires `limitsFor(policy, role, server)` into this shape); SEED_LIMITS are
// seed 001's defaults, used when the policy names none and by the tests.

/** Effective limits for one call (one role, one server). A missing or non-positive number means "no limit". */
export interface GateLimits {
  /** Calls per session in total; hitting it halts the session (SESSION_LIMIT). Seed 001: 200. */
  sessionCalls?: number;
  /** Calls per session per minute; RATE_LIMITED, no halt. Seed 001: 30. */
  sessionCallsPerMinute?: number;
  /** This server, this session, in total (github 50, database 100, shell 20); halts. */
  serverCalls?: number;
  /** This server, this session, per minute (github 10); RATE_LIMITED. */
  serverCallsPerMinute?: number;
  /** Write or delete calls to this server in this session (filesystem 30); halts. */
  serverWrites?: number;
  /** Read calls to this server in this session (filesystem 200); halts. */
  serverReads?: number;
  /** This server per minute across all of the token's sessions, so a new session per call escapes nothing. */
  tokenServerCallsPerMinute?: number;
  /** This server per minute across every token and session (protects the upstream). */
  serverCallsPerMinuteAllTokens?: number;
  /** Calls per token per minute across its sessions; RATE_LIMITED. */
  tokenCallsPerMinute?: number;
  /** Calls per token per UTC day across its sessions; RATE_LIMITED until midnight UTC. */
  tokenCallsPerDay?: number;
  /** Percent of a limit at which the call still passes but carries a warning (seed 001: 80). 0: off. */
  pauseAtPercent?: number;
  /** Cascade-write detection: `threshold` writes to different resources within the token's last `windowCalls` calls. threshold 0: off. */
  cascade?: { threshold: number; windowCalls: number };
}

export interface ServerSeedLimits {
  serverCalls?: number;
  serverCallsPerMinute?: number;
  serverWrites?: number;
  serverReads?: number;
}

/** Seed 001 "Rate limit configuration", plus per-token numbers (the policy module's defaults) so that cycling sessions escapes nothing. */
export const SEED_LIMITS = {
  global: {
    sessionCalls: 200,
    sessionCallsPerMinute: 30,
    tokenCallsPerMinute: 120,
    tokenCallsPerDay: 5000,
    pauseAtPercent: 80,
    cascade: { threshold: 3, windowCalls: 5 },
  },
  servers: {
    github: { serverCalls: 50, serverCallsPerMinute: 10 },
    filesystem: { serverWrites: 30, serverReads: 200 },
    database: { serverCalls: 100 },
    postgres: { serverCalls: 100 },
    sqlite: { serverCalls: 100 },
    shell: { serverCalls: 20 },
  } as Record<string, ServerSeedLimits>,
} as const;

/** Seed defaults for one server; the per-server per-minute limit also applies across the token's sessions. */
export function seedLimitsFor(server: string): GateLimits {
  const s = SEED_LIMITS.servers[server] ?? {};
  const limits: GateLimits = { ...SEED_LIMITS.global, cascade: { ...SEED_LIMITS.global.cascade }, ...s };
  if (s.serverCallsPerMinute !== undefined) limits.tokenServerCallsPerMinute = s.serverCallsPerMinute;
  return limits;
}

/** Window lengths. Production uses real minutes and days; tests pass short windows. */
export interface GateWindows {
  minuteMs: number;
  dayMs: number;
}

export const REAL_WINDOWS: GateWindows = { minuteMs: 60_000, dayMs: 86_400_000 };

/** One counter as the Lua script sees it (short field names keep the JSON small). */
export interface CounterSpec {
  /** Name in the answer's `limits` map. */
  n: string;
  /** Key relative to the prefix (windowed counters get `:<window index>` appended by the script). */
  k: string;
  /**
   * Hash field. A session's totals are fields of the session hash itself (`s:<sid>`, fields `c:*`):
   * they live exactly as long as the session, cost no TTL refresh, and a resume clears them.
   */
  f?: string;
  max: number;
  /** Window length in ms; 0: no window. */
  w: number;
  /** TTL in ms of a windowed counter (set when the window's key is created). */
  t: number;
  /** 1: exceeding halts the session (seed 001 trigger 4); 0: RATE_LIMITED. */
  h: 0 | 1;
}

/** Words for messages and warnings, by counter name. */
export const COUNTER_LABELS: Record<string, string> = {
  session_calls: 'calls in this session',
  server_calls: 'calls to {server} in this session',
  server_writes: 'write calls to {server} in this session',
  server_reads: 'read calls to {server} in this session',
  session_calls_per_minute: 'calls per minute in this session',
  server_calls_per_minute: 'calls per minute to {server} in this session',
  token_server_calls_per_minute: 'calls per minute to {server} by this token',
  server_calls_per_minute_all_tokens: 'calls per minute to {server} by all agents',
  token_calls_per_minute: 'calls per minute by this token',
  token_calls_per_day: 'calls today (UTC) by this token',
};

/** Whether a limit counts the calls to one server (server_calls, token_server_calls_per_minute ...), not all of them. */
export function limitOfServer(name: string): boolean {
  return (COUNTER_LABELS[name] ?? '').includes('{server}');
}

export function counterLabel(name: string, server: string): string {
  return (COUNTER_LABELS[name] ?? name).replace('{server}', server);
}

const limited = (n: number | undefined): n is number => typeof n === 'number' && Number.isFinite(n) && n > 0;

// Server names come from the policy; encoding keeps a ':' in a name from colliding with our key layout.
const enc = (s: string) => encodeURIComponent(s);

/**
 * The counters that apply to one call, in the order the script checks them: halting session totals
 * first (so the 201st call halts even when a per-minute limit is also reached), then per-minute and
 * per-day limits.
 */
export function countersFor(
  a: { tokenId: string; sessionId: string; server: string; capability: Capability },
  limits: GateLimits,
  windows: GateWindows,
): CounterSpec[] {
  const out: CounterSpec[] = [];
  const sid = a.sessionId;
  const srv = enc(a.server);
  const tok = a.tokenId;
  const total = (n: string, f: string, max: number | undefined) => {
    if (limited(max)) out.push({ n, k: `s:${sid}`, f: `c:${f}`, max, w: 0, t: 0, h: 1 });
  };
  const windowed = (n: string, k: string, max: number | undefined, w: number) => {
    if (limited(max)) out.push({ n, k, max, w, t: w + 5_000, h: 0 });
  };
  total('session_calls', 'calls', limits.sessionCalls);
  total('server_calls', `srv:${srv}:calls`, limits.serverCalls);
  if (a.capability === 'read') total('server_reads', `srv:${srv}:reads`, limits.serverReads);
  else total('server_writes', `srv:${srv}:writes`, limits.serverWrites);
  windowed('session_calls_per_minute', `cm:${sid}`, limits.sessionCallsPerMinute, windows.minuteMs);
  windowed('server_calls_per_minute', `cm:${sid}:${srv}`, limits.serverCallsPerMinute, windows.minuteMs);
  windowed('token_server_calls_per_minute', `tm:${tok}:${srv}`, limits.tokenServerCallsPerMinute, windows.minuteMs);
  windowed('server_calls_per_minute_all_tokens', `gm:${srv}`, limits.serverCallsPerMinuteAllTokens, windows.minuteMs);
  windowed('token_calls_per_minute', `tm:${tok}`, limits.tokenCallsPerMinute, windows.minuteMs);
  windowed('token_calls_per_day', `td:${tok}`, limits.tokenCallsPerDay, windows.dayMs);
  return out;
}

/** "161/200 calls in this session, 81%": the seed's numbers, for warnings and alerts. */
export function usageText(used: number, max: number, label: string): string {
  return `${used}/${max} ${label}, ${Math.round((used * 100) / max)}%`;
}

/**
 * The shape of the policy's `limitsFor(policy, role, server)` answer (src/policy/types.ts
 * EffectiveLimits), restated structurally so this module does not depend on the policy module.
 */
export interface PolicyLimitsShape {
  session: { maxCalls: number | null; maxCallsPerMinute: number | null };
  pauseAtPercent: number;
  token: { maxCallsPerMinute: number | null; maxCallsPerDay: number | null };
  server: {
    maxCallsPerSession: number | null;
    maxCallsPerMinute: number | null;
    maxCallsPerMinuteAllSessions: number | null;
    maxWriteCallsPerSession: number | null;
    maxReadCallsPerSession: number | null;
  };
  cascade: { threshold: number; windowCalls: number };
}

const fromPolicyMemo = new WeakMap<PolicyLimitsShape, Readonly<GateLimits>>();

/**
 * `fromPolicyLimits` for the decision path: the same object for the same (frozen, cached) policy limits,
 * so the gate can keep the encoded arguments built from it (RedisGate caches by identity).
 */
export function fromPolicyLimitsShared(l: PolicyLimitsShape): Readonly<GateLimits> {
  let out = fromPolicyMemo.get(l);
  if (!out) {
    out = Object.freeze(fromPolicyLimits(l));
    fromPolicyMemo.set(l, out);
  }
  return out;
}

/** Maps the policy's effective limits to the gate's. `null` in the policy means "no limit". */
export function fromPolicyLimits(l: PolicyLimitsShape, extra: { serverCallsPerMinuteAllTokens?: number } = {}): GateLimits {
  const n = (v: number | null | undefined): number | undefined => (v === null || v === undefined ? undefined : v);
  const out: GateLimits = { pauseAtPercent: l.pauseAtPercent, cascade: { threshold: l.cascade.threshold, windowCalls: l.cascade.windowCalls } };
  const set = <K extends keyof GateLimits>(k: K, v: number | null | undefined) => {
    const x = n(v);
    if (x !== undefined) (out as Record<string, unknown>)[k] = x;
  };
  set('sessionCalls', l.session.maxCalls);
  set('sessionCallsPerMinute', l.session.maxCallsPerMinute);
  set('serverCalls', l.server.maxCallsPerSession);
  set('serverCallsPerMinute', l.server.maxCallsPerMinute);
  set('serverWrites', l.server.maxWriteCallsPerSession);
  set('serverReads', l.server.maxReadCallsPerSession);
  set('tokenServerCallsPerMinute', l.server.maxCallsPerMinuteAllSessions);
  set('tokenCallsPerMinute', l.token.maxCallsPerMinute);
  set('tokenCallsPerDay', l.token.maxCallsPerDay);
  set('serverCallsPerMinuteAllTokens', extra.serverCallsPerMinuteAllTokens);
  return out;
}
