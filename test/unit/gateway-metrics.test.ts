import { describe, expect, it } from 'vitest';
import type { Outcome } from '../../src/gateway/calls.js';
import { GatewayMetrics } from '../../src/gateway/metrics.js';
import { exposition } from '../helpers/exposition.js';

// What the gateway's counters make of outcomes the real control plane does not give on demand (a code
// from a newer control plane or a proxy); the e2e file (test/e2e/gateway-metrics.test.ts) covers the rest.

const denied = (code: string, decided: boolean): Outcome<unknown> => ({ kind: 'denied', code, text: `${code}: no`, decisionId: undefined, decided });

describe('GatewayMetrics', () => {
  it('keeps the code label bounded: a code the table does not know is OTHER', async () => {
    const m = new GatewayMetrics();
    m.observeCall('tools/call', 'filesystem', denied('SOMETHING_A_NEWER_CONTROL_PLANE_SAYS', true));
    m.observeCall('tools/call', 'filesystem', denied('<html>502 Bad Gateway</html>', false));
    m.observeCall('tools/call', 'filesystem', denied('KILL_SWITCH', true));
    const e = exposition(await m.render());
    expect(e.value('killswitch_gateway_calls_total', { outcome: 'denied', code: 'OTHER' })).toBe(1);
    expect(e.value('killswitch_gateway_calls_total', { outcome: 'no_decision', code: 'OTHER' })).toBe(1);
    expect(e.value('killswitch_gateway_calls_total', { outcome: 'denied', code: 'KILL_SWITCH' })).toBe(1);
    expect(e.text).not.toContain('SOMETHING_A_NEWER');
    expect(e.text).not.toContain('Bad Gateway');
  });

  it('times an upstream call only when it was sent', async () => {
    const m = new GatewayMetrics();
    m.observeCall('resources/read', 'memory', { kind: 'failed', code: 'CANCELLED', text: '', decisionId: 'd-1', upstream: undefined });
    m.observeCall('resources/read', 'memory', { kind: 'failed', code: 'MAX_EXECUTION_TIME', text: '', decisionId: 'd-2', upstream: { result: 'timeout', seconds: 30 } });
    const e = exposition(await m.render());
    expect(e.v('killswitch_gateway_calls_total', { method: 'resources/read', server: 'memory', outcome: 'failed' })).toBe(2);
    expect(e.v('killswitch_gateway_upstream_call_duration_seconds_count')).toBe(1);
    expect(e.value('killswitch_gateway_upstream_call_duration_seconds_count', { server: 'memory', result: 'timeout' })).toBe(1);
    expect(e.value('killswitch_gateway_upstream_call_duration_seconds_sum', { server: 'memory', result: 'timeout' })).toBe(30);
  });
});
