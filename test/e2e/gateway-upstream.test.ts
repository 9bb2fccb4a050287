import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GatewayHarness, textOf } from './gateway-harness.js';

// What one upstream shared by every agent of a gateway must survive, and what the control plane must
// learn about it: a result larger than the SDK's 10 MB stdio buffer (real server-filesystem), a message
// larger than the gateway reads at all, an upstream that exits, error messages that carry data, and
// rows hidden inside objects (a fake stdio upstream, gateway-fake-upstream.ts). Real control plane.

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const FAKE_UPSTREAM = fileURLToPath(new URL('./gateway-fake-upstream.ts', import.meta.url));
const h = new GatewayHarness();

beforeAll(async () => {
  await h.start();
  writeFileSync(join(h.dir, 'small.md'), 'small file\n');
  writeFileSync(join(h.dir, 'twelve-mb.txt'), 'x'.repeat(12_000_000));
}, 120_000);
afterAll(() => h.stop());

type Client = Awaited<ReturnType<GatewayHarness['client']>>;
const call = async (client: Client, name: string, args: Record<string, unknown>) => (await client.callTool({ name, arguments: args })) as CallToolResult;
const decisionIdOf = (r: CallToolResult) => (r._meta?.['killswitch/decision'] as { decision_id?: string } | undefined)?.decision_id;
const codeOf = (r: CallToolResult) => (r._meta?.['killswitch/decision'] as { code?: string } | undefined)?.code;

async function resultRow(decisionId: string | undefined): Promise<Record<string, unknown> | undefined> {
  expect(decisionId).toBeTruthy();
  const rows = await h.auditRows("decision_id = $1 AND kind = 'RESULT'", [decisionId], (r) => r.length > 0);
  return rows[0];
}

/** A gateway whose "memory" server is the fake stdio upstream. */
function fakeGateway(p: { env?: Record<string, string>; killswitch?: Record<string, unknown> } = {}) {
  return h.gateway({
    mcpServers: { filesystem: { disabled: true }, memory: { command: process.execPath, args: ['--import', 'tsx', FAKE_UPSTREAM], cwd: ROOT, env: p.env ?? {} } },
    killswitch: { startTimeoutMs: 60_000, ...p.killswitch },
  });
}

describe('a large result does not take the shared upstream away', () => {
  it('reading a 12 MB file with server-filesystem is withheld as LARGE_RESULT with its size recorded; another agent keeps reading', async () => {
    const gateway = await h.gateway();
    const a = await h.client(gateway, await h.token('ro'));
    const b = await h.client(gateway, await h.token('ro'));
    const big = await call(a, 'read_text_file', { path: 'twelve-mb.txt' });
    expect(big.isError).toBe(true);
    expect(codeOf(big)).toBe('LARGE_RESULT');
    expect(textOf(big)).toMatch(/^LARGE_RESULT: /);
    const row = await resultRow(decisionIdOf(big));
    expect(row?.['result_status']).toBe('withheld');
    expect(Number(row?.['result_bytes'])).toBeGreaterThanOrEqual(12_000_000);

    const small = await call(b, 'read_text_file', { path: 'small.md' });
    expect(small.isError, textOf(small)).toBeFalsy();
    expect(textOf(small)).toContain('small file');
  }, 60_000);

  it('a message over the 64 MB the gateway reads is discarded: LARGE_RESULT with its exact size, and the upstream keeps serving', async () => {
    const gateway = await fakeGateway();
    const client = await h.client(gateway, await h.token('ro'));
    const huge = await call(client, 'search_nodes', { query: 'huge:70000000' });
    expect(huge.isError).toBe(true);
    expect(codeOf(huge)).toBe('LARGE_RESULT');
    const row = await resultRow(decisionIdOf(huge));
    expect(row?.['result_status']).toBe('withheld');
    expect(Number(row?.['result_bytes'])).toBeGreaterThan(70_000_000);

    const other = await h.client(gateway, await h.token('ro'));
    const after = await call(other, 'read_graph', {});
    expect(after.isError, textOf(after)).toBeFalsy();
    expect(textOf(after)).toContain('Ada knows Grace');
  }, 90_000);
});

describe('an upstream that exits', () => {
  it('is reconnected: calls meanwhile answer UPSTREAM_UNAVAILABLE at once, then it serves again', async () => {
    const hold = join(h.scratch, 'fake-hold');
    const starts = join(h.scratch, 'fake-starts');
    const gateway = await fakeGateway({ env: { FAKE_UPSTREAM_HOLD: hold, FAKE_UPSTREAM_STARTS: starts } });
    const client = await h.client(gateway, await h.token('ro'));
    writeFileSync(hold, 'the next starts fail');

    const crashed = await call(client, 'search_nodes', { query: 'crash' });
    expect(crashed.isError).toBe(true);
    expect(codeOf(crashed)).toBe('UPSTREAM_UNAVAILABLE');

    const t0 = Date.now();
    const down = await call(client, 'read_graph', {});
    expect(Date.now() - t0).toBeLessThan(5000);
    expect(codeOf(down)).toBe('UPSTREAM_UNAVAILABLE');
    expect(textOf(down)).toMatch(/^UPSTREAM_UNAVAILABLE: upstream memory is down .*reconnecting/);

    rmSync(hold);
    let back: CallToolResult | undefined;
    for (const deadline = Date.now() + 40_000; Date.now() < deadline; ) {
      back = await call(client, 'read_graph', {});
      if (!back.isError) break;
      expect(codeOf(back)).toBe('UPSTREAM_UNAVAILABLE');
      await new Promise((r) => setTimeout(r, 500));
    }
    expect(back?.isError, back && textOf(back)).toBeFalsy();
    expect(textOf(back ?? {})).toContain('Ada knows Grace');
    expect(existsSync(starts) && readFileSync(starts, 'utf8').trim().split('\n').length).toBe(2);
  }, 90_000);
});

describe('upstream error messages are results', () => {
  it('an error message over the size limit is withheld as LARGE_RESULT and recorded with its size', async () => {
    const gateway = await fakeGateway();
    const client = await h.client(gateway, await h.token('ro'));
    const r = await call(client, 'search_nodes', { query: 'error:3000000' });
    expect(r.isError).toBe(true);
    expect(codeOf(r)).toBe('LARGE_RESULT');
    expect(JSON.stringify(r).length).toBeLessThan(10_000);
    const row = await resultRow(decisionIdOf(r));
    expect(row?.['result_status']).toBe('withheld');
    expect(Number(row?.['result_bytes'])).toBeGreaterThanOrEqual(3_000_000);
  }, 60_000);

  it('a smaller error message reaches the agent cut to 4 KB, saying so; the RESULT row has its full size', async () => {
    const gateway = await fakeGateway();
    const client = await h.client(gateway, await h.token('ro'));
    const r = await call(client, 'search_nodes', { query: 'error:20000' });
    expect(r.isError).toBe(true);
    expect(codeOf(r)).toBe('UPSTREAM_ERROR');
    expect(textOf(r)).toMatch(/^UPSTREAM_ERROR: .*invalid input syntax/);
    expect(Buffer.byteLength(textOf(r))).toBeLessThan(4096 + 300);
    expect(textOf(r)).toMatch(/\[killswitch: the upstream's error message was \d+ bytes; only the first 4096 are shown\]$/);
    const row = await resultRow(decisionIdOf(r));
    expect(row?.['result_status']).toBe('error');
    expect(Number(row?.['result_bytes'])).toBeGreaterThanOrEqual(20_000);
  }, 60_000);

  it('resources/read: a 3 MB error message is withheld as LARGE_RESULT, not passed on', async () => {
    const gateway = await fakeGateway();
    const client = await h.client(gateway, await h.token('ro'));
    const err = await client.readResource({ uri: 'fake://table' }).then(
      () => undefined,
      (e: Error) => e,
    );
    expect(err?.message).toMatch(/^MCP error -32600: LARGE_RESULT: /);
    expect(err?.message.length).toBeLessThan(10_000);
    const rows = await h.auditRows("tool = 'resources/read' AND kind = 'RESULT'", [], (r) => r.length > 0);
    expect(rows[0]?.['result_status']).toBe('withheld');
    expect(Number(rows[0]?.['result_bytes'])).toBeGreaterThanOrEqual(3_000_000);
  }, 60_000);
});

describe('rows are counted wherever the result holds them', () => {
  it('rows inside an object, a json_agg and an embedded resource are over maxRows: MAX_ROWS, with the count recorded', async () => {
    const gateway = await fakeGateway({ killswitch: { limits: { maxRows: 10 } } });
    const client = await h.client(gateway, await h.token('ro'));
    for (const query of ['rows-object:50', 'rows-agg:50', 'rows-resource:50']) {
      const r = await call(client, 'search_nodes', { query });
      expect(r.isError, `${query}: ${textOf(r)}`).toBe(true);
      expect(textOf(r)).toMatch(/^MAX_ROWS: the result has 50 rows/);
      expect(textOf(r)).not.toContain('user49@example.com');
      const row = await resultRow(decisionIdOf(r));
      expect(Number(row?.['rows'])).toBe(50);
    }
    const few = await call(client, 'search_nodes', { query: 'rows-object:5' });
    expect(few.isError, textOf(few)).toBeFalsy();
  }, 60_000);
});
