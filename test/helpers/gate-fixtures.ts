import type { FastifyInstance } from 'fastify';
import { v7 as uuidv7 } from 'uuid';
import { expect } from 'vitest';
import type { Config } from '../../src/config.js';
import type { CallContext, HaltTrigger } from '../../src/decisions/types.js';
import { type GateOptions, RedisGate } from '../../src/limits/gate.js';
import type { GateLimits } from '../../src/limits/limits.js';
import { createGateStep } from '../../src/limits/step.js';
import type { RedisHandle } from '../../src/redis/client.js';
import type { AgentPrincipal, GatewayPrincipal, OperatorPrincipal } from '../../src/tokens/authenticator.js';
import type { Capability } from '../../src/tokens/scopes.js';
import type { TestContext } from './context.js';

// Shared by the sessions/gate/limits tests: real tokens in the file's database, sessions opened through
// SessionService, and CallContexts as the policy step would leave them for the Redis step.

export const ALL_TRIGGERS: HaltTrigger[] = ['UNAUTHORIZED_SERVER', 'WRITE_IN_READ_SESSION', 'PRODUCTION_ENVIRONMENT', 'SESSION_LIMIT', 'LARGE_RESULT', 'CASCADE_WRITE', 'MAX_ROWS', 'MAX_EXECUTION_TIME'];

export interface World {
  app: FastifyInstance;
  owner: string;
  ownerPrincipal: OperatorPrincipal;
  gatewayKey: string;
  gateway: GatewayPrincipal;
  token(type?: 'ro' | 'rw' | 'admin', project?: string): Promise<{ raw: string; agent: AgentPrincipal }>;
  open(agent: AgentPrincipal, scope?: { read_only?: boolean; servers?: string[]; purpose?: string }): Promise<string>;
}

export async function world(t: TestContext, overrides: Partial<Config> = {}): Promise<World> {
  const app = await t.app(overrides);
  const owner = await t.operatorKey(app, 'owner');
  const ownerPrincipal = (await app.ctx.auth.authenticate(owner)) as OperatorPrincipal;
  const gw = await app.ctx.credentials.createGatewayKey(ownerPrincipal, 'test gateway');
  const gateway = (await app.ctx.auth.authenticate(gw.key)) as GatewayPrincipal;
  expect((await app.ctx.sessions.ensureState()) !== 'unavailable').toBe(true);
  return {
    app,
    owner,
    ownerPrincipal,
    gatewayKey: gw.key,
    gateway,
    async token(type = 'rw', project = 'alpha') {
      const created = await app.ctx.credentials.createAgentToken(ownerPrincipal, {
        type,
        role: 'code_agent',
        project_id: project,
        environment: 'development',
        ...(type === 'rw' ? { acknowledge_write_risk: true } : {}),
        ...(type === 'admin' ? { acknowledge_write_risk: true, confirm_admin: true, confirm_project_id: project } : {}),
      });
      return { raw: created.token, agent: (await app.ctx.auth.authenticate(created.token)) as AgentPrincipal };
    },
    async open(agent, scope = {}) {
      return (await app.ctx.sessions.open(agent, gateway, scope)).session_id;
    },
  };
}

export interface CallSpec {
  server?: string;
  tool?: string;
  capability?: Capability;
  resources?: string[];
  args?: Record<string, unknown>;
  dryRun?: boolean;
}

export function callContext(w: World, agent: AgentPrincipal, sessionId: string, c: CallSpec = {}): CallContext {
  const server = c.server ?? 'filesystem';
  const tool = c.tool ?? (c.capability === 'read' || c.capability === undefined ? 'read_file' : 'write_file');
  const capability = c.capability ?? 'read';
  return {
    decisionId: uuidv7(),
    receivedAt: Date.now(),
    gateway: w.gateway,
    agent,
    input: { server, tool, arguments: c.args ?? {}, session_id: sessionId },
    ip: '127.0.0.1',
    call: {
      server,
      serverClass: 'storage',
      tool,
      requiredScope: capability === 'read' ? 'storage:read' : 'storage:write',
      capability,
      scopeSource: 'map',
      extraFlags: [],
      resourceIds: c.resources ?? [`${server}/${tool}`],
      networkIdentities: [],
    },
    flagsEvaluated: [],
    limits: {},
    warnings: [],
    dryRun: c.dryRun ?? false,
    trace: [],
  };
}

const NO_TRIGGERS: HaltTrigger[] = [];

/** A gate step over `redis` with limits the test controls (mutate `state.limits` between calls). */
export function gateStep(
  w: World,
  state: { limits: GateLimits; haltTokenOn?: HaltTrigger[]; killKeys?: string[]; alerts?: unknown[] },
  opts: Partial<GateOptions> & { redis?: RedisHandle } = {},
) {
  const gate = new RedisGate(opts.redis ?? w.app.ctx.redis, {
    sessionIdleMs: opts.sessionIdleMs ?? 3_600_000,
    decisionTtlMs: opts.decisionTtlMs ?? 3_600_000,
    ...(opts.windows ? { windows: opts.windows } : {}),
    onMissingEpoch: () => w.app.ctx.sessions.epoch.requestReload(),
  });
  const step = createGateStep({
    gate,
    sessions: w.app.ctx.sessions,
    limitsFor: () => state.limits,
    // One array for "none", as the policy hands the gate one set per policy: a new array per call would
    // defeat the gate's cache of encoded arguments (FixedParts), and the tests would never exercise it.
    haltTokenOn: () => state.haltTokenOn ?? NO_TRIGGERS,
    killKeys: () => state.killKeys ?? [],
    onAlert: (a) => {
      state.alerts?.push(a);
    },
  });
  return { gate, step };
}

/** Every key under the prefix: its serialized value and, when it has one, its TTL (ms) when read. */
/**
 * Keys other modules rewrite on their own timers, whatever the gate does: the shared flag backup (its
 * confirmation time, every few seconds), the replicas' policy and log-level records. Not gate state.
 */
const BACKGROUND_KEYS = /^(flags:|policy|log-level)/;

export async function snapshot(redis: RedisHandle): Promise<Map<string, { value: string; pttl: number }>> {
  const out = new Map<string, { value: string; pttl: number }>();
  let cursor = '0';
  do {
    const [next, keys] = await redis.redis.scan(cursor, 'MATCH', `${redis.prefix}*`, 'COUNT', 1000);
    cursor = next;
    for (const k of keys) {
      if (BACKGROUND_KEYS.test(k.slice(redis.prefix.length))) continue;
      const value = await redis.redis.dump(k);
      // Listed by SCAN, then expired before DUMP (an earlier test's short-window counter): not a key.
      if (value === null) continue;
      out.set(k, { value: JSON.stringify(value), pttl: await redis.redis.pttl(k) });
    }
  } while (cursor !== '0');
  return out;
}

/**
 * What changed between two snapshots, leaving out keys that merely expired (they had a TTL before and
 * are gone after: on a slow machine a short window's counter from an earlier test can expire in between).
 */
export function changedKeys(before: Map<string, { value: string; pttl: number }>, after: Map<string, { value: string; pttl: number }>): string[] {
  const changed: string[] = [];
  for (const [k, a] of after) if (before.get(k)?.value !== a.value) changed.push(k);
  // Only a key without a TTL (pttl -1) cannot have expired; -2 means it was already gone when read.
  for (const [k, b] of before) if (!after.has(k) && b.pttl === -1) changed.push(k);
  return changed;
}

/**
 * Deletes this file's keys: what a FLUSHALL means for one installation. In one DEL, as a FLUSHALL is one
 * command: deleted batch by batch (as the SCAN found them), a replica could see the epoch gone and reload
 * sessions from Postgres between two batches, and the next batch deleted what it had just reloaded (an
 * epoch without its sessions, which no real Redis loss produces).
 */
export async function flushPrefix(redis: RedisHandle): Promise<number> {
  const keys = new Set<string>();
  let cursor = '0';
  do {
    const [next, found] = await redis.redis.scan(cursor, 'MATCH', `${redis.prefix}*`, 'COUNT', 1000);
    cursor = next;
    for (const k of found) keys.add(k);
  } while (cursor !== '0');
  return keys.size > 0 ? redis.redis.del(...keys) : 0;
}
