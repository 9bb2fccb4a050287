import { type Unleash, UnleashEvents } from 'unleash-client';
import { afterEach, describe, expect, it } from 'vitest';
import { sdkEvaluator } from '../../src/flags/service.js';
import { offlineUnleash } from '../helpers/unleash-offline.js';

// A tripwire for the unleash-client internal that FlagService.isEnabledUncounted relies on: explain and
// GET /v1/flags evaluate flags through the SDK's inner evaluator so that Unleash's usage metrics count
// agents' calls only. An upgrade that moves, renames or changes it fails here, saying what to do, instead
// of explain answering DEPENDENCY_UNAVAILABLE for every constrained flag in production.

const UPGRADE_HINT =
  "unleash-client's inner evaluator (Unleash#client.isEnabled(name, context, fallback), not public API) moved or changed in this SDK version. " +
  'Find the SDK function that evaluates a flag (strategies, constraints, segments, dependencies) without counting it in the usage metrics, ' +
  'point sdkEvaluator in src/flags/service.ts at it, and run this file again; or keep unleash-client at 6.12.';

const clients: Unleash[] = [];

/** A client on bootstrap data (test/helpers/unleash-offline.ts): counting, as the control plane's. */
async function client(): Promise<Unleash> {
  const c = await offlineUnleash('sdk-evaluator-test', {
    data: [
      {
        name: 'mcp.enabled',
        enabled: true,
        strategies: [{ name: 'flexibleRollout', parameters: { rollout: '100', stickiness: 'default', groupId: 'mcp.enabled' }, constraints: [], segments: [7] }],
      },
      {
        name: 'mcp.memory.write',
        enabled: true,
        strategies: [
          {
            name: 'flexibleRollout',
            parameters: { rollout: '100', stickiness: 'default', groupId: 'mcp.memory.write' },
            constraints: [{ contextName: 'userId', operator: 'NOT_IN' as never, values: ['tok-runaway'], inverted: false }],
          },
        ],
      },
      { name: 'mcp.memory.delete', enabled: false, strategies: [{ name: 'default', parameters: {}, constraints: [] }] },
    ],
    segments: [{ id: 7, constraints: [{ contextName: 'tokenType', operator: 'NOT_IN' as never, values: ['rw'], inverted: false }] }],
  });
  clients.push(c);
  return c;
}

afterEach(() => {
  for (const c of clients.splice(0)) c.destroy();
});

describe("unleash-client's uncounted evaluator (explain, GET /v1/flags)", () => {
  it('is there', async () => {
    const found = sdkEvaluator(await client());
    expect(found.evaluate, `${UPGRADE_HINT} (${'why' in found ? found.why : ''})`).toBeTypeOf('function');
  });

  it('answers as the public isEnabled does: constraints, segments, a flag turned off, a missing flag', async () => {
    const c = await client();
    const { evaluate } = sdkEvaluator(c);
    if (!evaluate) throw new Error(UPGRADE_HINT);
    const cases: Array<[string, Record<string, unknown>, boolean]> = [
      ['mcp.memory.write', { userId: 'tok-1' }, true],
      ['mcp.memory.write', { userId: 'tok-runaway' }, false],
      ['mcp.enabled', { userId: 'tok-1', properties: { tokenType: 'ro' } }, true],
      ['mcp.enabled', { userId: 'tok-1', properties: { tokenType: 'rw' } }, false],
      ['mcp.memory.delete', { userId: 'tok-1' }, false],
      ['mcp.never.created', { userId: 'tok-1' }, false],
    ];
    for (const [name, context, expected] of cases) {
      const full = { appName: 'sdk-evaluator-test', environment: 'default', ...context };
      expect(evaluate(name, full, () => false), `${UPGRADE_HINT} (${name} for ${JSON.stringify(context)})`).toBe(expected);
      expect(c.isEnabled(name, full, false)).toBe(expected);
    }
  });

  it('counts nothing in the usage metrics, where the public isEnabled counts', async () => {
    const c = await client();
    const { evaluate } = sdkEvaluator(c);
    if (!evaluate) throw new Error(UPGRADE_HINT);
    const counted: string[] = [];
    c.on(UnleashEvents.Count, (name: string) => counted.push(name));
    evaluate('mcp.memory.write', { userId: 'tok-1' }, () => false);
    evaluate('mcp.enabled', { userId: 'tok-1', properties: { tokenType: 'ro' } }, () => false);
    expect(counted, UPGRADE_HINT).toEqual([]);
    c.isEnabled('mcp.memory.write', { userId: 'tok-1' });
    expect(counted).toEqual(['mcp.memory.write']);
  });

  it('reports, rather than pretends, when the internals are not there', async () => {
    const c = await client();
    const holder = c as unknown as { client: unknown };
    const inner = holder.client;
    holder.client = { getVariant: () => undefined };
    expect(sdkEvaluator(c)).toEqual({ evaluate: undefined, why: expect.stringMatching(/no isEnabled/) });
    holder.client = undefined;
    expect(sdkEvaluator(c)).toEqual({ evaluate: undefined, why: expect.stringMatching(/no `client`/) });
    holder.client = inner;
  });
});
