import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { GateLimits } from '../../src/limits/limits.js';
import { TestContext } from '../helpers/context.js';
import { gateStep, type World, world } from '../helpers/gate-fixtures.js';

// The gate script's window arithmetic at its exact edge, read from gate.check (Redis time, milliseconds):
// the step's answer rounds it up to seconds (retry_after_s), which hides a window end that is off by one.

const t = new TestContext();
let w: World;

beforeAll(async () => {
  await t.setup();
  w = await world(t);
});
afterAll(() => t.teardown());

const HIGH: GateLimits = { sessionCalls: 100_000, pauseAtPercent: 0, cascade: { threshold: 0, windowCalls: 5 } };

describe('gate windows at their edges', () => {
  it('a per-minute denial says how long until its window ends, to the millisecond: retry then and the call is counted in the next window', async () => {
    const { agent } = await w.token();
    const sid = await w.open(agent);
    // A long window: the two checks below land in the same one (a boundary in between only fails the first expect).
    const windows = { minuteMs: 3_600_000, dayMs: 86_400_000 };
    const limits: GateLimits = { ...HIGH, sessionCallsPerMinute: 1 };
    const { gate } = gateStep(w, { limits }, { windows });
    const req = { tokenId: agent.id, sessionId: sid, server: 'filesystem', tool: 'read_file', capability: 'read' as const, resourceIds: [], arguments: {}, limits, haltTokenOn: [] };
    expect(await gate.check({ ...req, decisionId: 'w1' })).toMatchObject({ allowed: true });
    const denied = await gate.check({ ...req, decisionId: 'w2' });
    expect(denied).toMatchObject({ allowed: false, reason: 'LIMIT', exceeded: { name: 'session_calls_per_minute', used: 1, max: 1, halts: false } });
    const retry = denied.exceeded!.retryAfterMs;
    // The window the denial counted in ends at now + retry: a multiple of the window length, and not before it.
    expect((denied.now + retry) % windows.minuteMs).toBe(0);
    expect(Math.floor((denied.now + retry) / windows.minuteMs)).toBe(Math.floor(denied.now / windows.minuteMs) + 1);
    expect(retry).toBeGreaterThan(0);
  });
});
