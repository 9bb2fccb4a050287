import { existsSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Gateway } from '../../src/gateway/gateway.js';
import type { ReconnectBackoff } from '../../src/gateway/upstream.js';
import { until } from '../helpers/unleash.js';
import { GatewayHarness, textOf } from './gateway-harness.js';

// What one upstream shared by every agent of a gateway must survive, and what the control plane must
// learn about it: a result larger than the SDK's 10 MB stdio buffer (real server-filesystem), a message
// larger than the gateway reads at all, an upstream that exits, error messages that carry data, and
// rows hidden inside objects (a fake stdio upstream, gateway-fake-upstream.mjs). Real control plane.

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const FAKE_UPSTREAM = fileURLToPath(new URL('./gateway-fake-upstream.mjs', import.meta.url));
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

/** The config of a gateway whose "memory" server is the fake stdio upstream. */
function fakeConfig(p: { env?: Record<string, string>; killswitch?: Record<string, unknown>; command?: string } = {}) {
  return {
    mcpServers: { filesystem: { disabled: true }, memory: { command: p.command ?? process.execPath, args: [FAKE_UPSTREAM], cwd: ROOT, env: p.env ?? {} } },
    killswitch: { startTimeoutMs: 60_000, ...p.killswitch },
  };
}

function fakeGateway(p: Parameters<typeof fakeConfig>[0] = {}) {
  return h.gateway(fakeConfig(p));
}

type LogLine = { level: number; time: number; msg: string; server?: string; attempt?: number; attempts?: number; downForSeconds?: number; closedAgain?: number; err?: string };

/** A fake-upstream gateway whose log lines (info and up by default: what an operator reads) are kept in `lines`. */
async function loggedFakeGateway(env: Record<string, string>, command?: string, level = 'info') {
  const lines: LogLine[] = [];
  const log = pino({ level }, { write: (line: string) => void lines.push(JSON.parse(line) as LogLine) });
  const gateway = await Gateway.start(h.config(fakeConfig({ env, ...(command ? { command } : {}) })), log);
  h.gateways.push(gateway);
  return { gateway, lines };
}

const linesOf = (file: string) => (existsSync(file) ? readFileSync(file, 'utf8').split('\n').filter(Boolean) : []);
const lineCount = (file: string) => linesOf(file).length;

/** The real backoff's shape (0.5 s doubling to 30 s, 10 loud attempts, quiet for 5 min, stable after 60 s) in milliseconds, not minutes. */
const FAST_BACKOFF: ReconnectBackoff = { firstDelayMs: 10, maxDelayMs: 100, loudAttempts: 10, quietLogEveryMs: 1500, stableAfterMs: 2000 };
/** Waits long enough (50 ms doubling to 800 ms) to tell apart from a node start (~0.35 s), and 4 loud attempts. */
const FLAP_BACKOFF: ReconnectBackoff = { firstDelayMs: 50, maxDelayMs: 800, loudAttempts: 4, quietLogEveryMs: 3000, stableAfterMs: 4000 };
const delayBefore = (b: ReconnectBackoff, attempt: number) => Math.min(b.firstDelayMs * 2 ** (attempt - 1), b.maxDelayMs);

/** The waits an upstream's reconnect loop asks for before each attempt, in order (they are still waited). */
function recordWaits(upstream: unknown): number[] {
  const waits: number[] = [];
  const internals = upstream as { sleep: (ms: number) => Promise<void> };
  const sleep = internals.sleep.bind(upstream);
  internals.sleep = (ms: number) => {
    waits.push(ms);
    return sleep(ms);
  };
  return waits;
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

    // Every start fails while the hold file exists (it is removed only after this call is answered): a call
    // that waited for the reconnect would never be answered.
    const down = await call(client, 'read_graph', {});
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

  it('stays down for longer than the first 10 attempts cover, then comes back: served again without a restart; the log warns on each first attempt, then at most once per interval', async () => {
    const hold = join(h.scratch, 'long-hold');
    const starts = join(h.scratch, 'long-starts');
    const refused = join(h.scratch, 'long-refused');
    const { gateway, lines } = await loggedFakeGateway({ FAKE_UPSTREAM_HOLD: hold, FAKE_UPSTREAM_STARTS: starts, FAKE_UPSTREAM_REFUSED: refused });
    gateway.upstream('memory').reconnectBackoff = FAST_BACKOFF;
    const client = await h.client(gateway, await h.token('ro'));
    writeFileSync(hold, 'the next starts fail');
    const crashed = await call(client, 'search_nodes', { query: 'crash' });
    expect(codeOf(crashed)).toBe('UPSTREAM_UNAVAILABLE');

    // Each refused start is one attempt (a node process that exits before loading the SDK, ~0.1 s here): past the 10 the gateway used to
    // give up after, and down long enough for two of the quiet "still down" lines.
    await until(() => lineCount(refused) > 12, 60_000, 'more than 12 refused starts of the held upstream');
    const stillDown = () => lines.filter((l) => l.msg.startsWith('upstream still down'));
    await until(() => stillDown().length >= 2, 30_000, 'two "upstream still down" log lines');

    const down = await call(client, 'read_graph', {});
    expect(codeOf(down)).toBe('UPSTREAM_UNAVAILABLE');
    expect(textOf(down)).toMatch(/^UPSTREAM_UNAVAILABLE: upstream memory is down for \d+ s \(its connection closed\); the gateway is reconnecting it and retries at least every 0\.1 s$/);

    rmSync(hold);
    let back: CallToolResult | undefined;
    await until(
      async () => {
        back = await call(client, 'read_graph', {});
        return !back.isError;
      },
      30_000,
      'read_graph served again',
      200,
    );
    expect(textOf(back ?? {})).toContain('Ada knows Grace');
    expect(lineCount(starts)).toBe(2);

    const memory = lines.filter((l) => l.server === 'memory');
    const loud = memory.filter((l) => l.msg.startsWith('upstream reconnect failed'));
    expect(loud.map((l) => l.attempt)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    expect(loud[9]?.msg).toMatch(/tries again every 0\.1 s for as long as it runs/);
    const quiet = stillDown();
    for (let i = 1; i < quiet.length; i++) expect(quiet[i]!.time - quiet[i - 1]!.time).toBeGreaterThanOrEqual(FAST_BACKOFF.quietLogEveryMs);
    expect(quiet[0]!.attempts).toBeGreaterThan(10);
    expect(quiet[0]!.downForSeconds).toBeGreaterThanOrEqual(1);
    // Nothing else about this upstream was logged while it was down: one closed line, the loud
    // attempts, the quiet lines, and one line when it came back.
    expect(memory.filter((l) => l.level >= 40)).toHaveLength(1 + loud.length + quiet.length);
    const reconnected = memory.filter((l) => l.msg === 'upstream reconnected');
    expect(reconnected).toHaveLength(1);
    // One reconnect loop: every attempt but the last started the upstream once, and was refused.
    expect(reconnected[0]!.attempts).toBe(lineCount(refused) + 1);
    const closed = memory.find((l) => l.msg.startsWith('upstream connection closed'));
    expect(Math.abs(reconnected[0]!.downForSeconds! - (reconnected[0]!.time - closed!.time) / 1000)).toBeLessThanOrEqual(1);
  }, 150_000);

  it('initializes and dies on tools/list at every restart: one outage whose attempts back off to maxDelayMs, its warnings bounded by the quiet rule; once up for stableAfterMs, the next close starts from attempt 1', async () => {
    const flap = join(h.scratch, 'flap-flap');
    const flapped = join(h.scratch, 'flap-flapped');
    const { gateway, lines } = await loggedFakeGateway({ FAKE_UPSTREAM_FLAP: flap, FAKE_UPSTREAM_FLAPPED: flapped });
    gateway.upstream('memory').reconnectBackoff = FLAP_BACKOFF;
    const waits = recordWaits(gateway.upstream('memory'));
    const client = await h.client(gateway, await h.token('ro'));
    writeFileSync(flap, 'tools/list exits');
    const crashed = await call(client, 'search_nodes', { query: 'crash' });
    expect(codeOf(crashed)).toBe('UPSTREAM_UNAVAILABLE');

    // Each restart initializes (the reconnect succeeds), is asked for its tools, and exits.
    const FLAPS = 9;
    await until(() => lineCount(flapped) >= FLAPS, 90_000, `${FLAPS} restarts that died on tools/list`);
    // Each reconnect went on with the outage's attempts (logged on the loud ones only), rather than
    // starting a new outage at attempt 1.
    const reconnected = () => lines.filter((l) => l.server === 'memory' && l.msg === 'upstream reconnected').map((l) => l.attempts);
    expect(reconnected()).toEqual([1, 2, 3, 4]);
    // Death k was attempt k's connection; attempt k waited its delay before it started, so the waits
    // grow by the backoff (50 ms ... 800 ms) across the restarts instead of starting again at 50 ms.
    expect(waits.slice(0, FLAPS)).toEqual(Array.from({ length: FLAPS }, (_, k) => delayBefore(FLAP_BACKOFF, k + 1)));
    const stillDown = () => lines.filter((l) => l.server === 'memory' && l.msg.startsWith('upstream still down'));
    await until(() => stillDown().length >= 1, 30_000, 'an "upstream still down" line');

    // Down since the crash, not since the last reconnect. (A call that lands while a restarted connection
    // is up and then closes under it is refused with the SDK's "connection closed" text instead: ask again.)
    let down: CallToolResult | undefined;
    let diedBefore: number[] = [];
    await until(
      async () => {
        diedBefore = linesOf(flapped).map(Number);
        down = await call(client, 'read_graph', {});
        return codeOf(down) === 'UPSTREAM_UNAVAILABLE' && / is down for \d+ s /.test(textOf(down));
      },
      10_000,
      'read_graph answered UPSTREAM_UNAVAILABLE saying for how long',
      50,
    );
    const downFor = Number(/ is down for (\d+) s /.exec(textOf(down ?? {}))?.[1]);
    // The crash came before the first restart died, and the answer after the last death seen before the
    // call: down since the crash is at least that span (a count from the last reconnect would be less).
    expect(Math.round((diedBefore.at(-1)! - diedBefore[0]!) / 1000)).toBeGreaterThanOrEqual(2);
    expect(downFor).toBeGreaterThanOrEqual(Math.round((diedBefore.at(-1)! - diedBefore[0]!) / 1000));

    const memory = lines.filter((l) => l.server === 'memory');
    expect(memory.filter((l) => l.msg.startsWith('upstream connection closed'))).toHaveLength(1);
    const loud = memory.filter((l) => l.msg.startsWith('upstream reconnect failed'));
    expect(loud.map((l) => l.attempt)).toEqual([1, 2, 3, 4]);
    expect(loud[0]!.err).toMatch(/closed again \d+ s after it reconnected/);
    // Its reconnects are logged on the loud attempts only; the quiet lines count them.
    expect(reconnected()).toEqual([1, 2, 3, 4]);
    const quiet = stillDown();
    for (let i = 1; i < quiet.length; i++) expect(quiet[i]!.time - quiet[i - 1]!.time).toBeGreaterThanOrEqual(FLAP_BACKOFF.quietLogEveryMs);
    expect(quiet[0]!.attempts).toBeGreaterThan(4);
    expect(quiet[0]!.closedAgain).toBeGreaterThan(4);
    expect(quiet[0]!.msg).toMatch(/^upstream still down \(it reconnected but closed again \d+ times\)/);
    // Nothing else warned: no "could not re-read upstream tools" per restart, no protocol errors.
    expect(memory.filter((l) => l.level >= 40)).toHaveLength(1 + loud.length + quiet.length);

    // Its database is back: served again, and once up for stableAfterMs the outage is over.
    rmSync(flap);
    await until(
      async () => !(await call(client, 'read_graph', {})).isError,
      30_000,
      'read_graph served again',
      100,
    );
    const backForGood = () => lines.find((l) => l.server === 'memory' && l.msg.startsWith('upstream back for good'));
    await until(() => backForGood() !== undefined, 15_000, 'an "upstream back for good" line');
    const good = backForGood();
    expect(good!.closedAgain).toBeGreaterThanOrEqual(FLAPS);
    expect(good!.attempts).toBe(good!.closedAgain! + 1);

    // A new outage starts from attempt 1 again.
    const before = lines.length;
    expect(codeOf(await call(client, 'search_nodes', { query: 'crash' }))).toBe('UPSTREAM_UNAVAILABLE');
    await until(() => lines.slice(before).some((l) => l.msg === 'upstream reconnected'), 30_000, 'reconnected after the second crash');
    const second = lines.slice(before).filter((l) => l.server === 'memory');
    expect(second.find((l) => l.msg.startsWith('upstream connection closed'))).toBeDefined();
    expect(second.find((l) => l.msg === 'upstream reconnected')?.attempts).toBe(1);
  }, 150_000);

  it('whose command is gone (spawn ENOENT on every attempt): no "upstream protocol error" warning per attempt, only the quiet rule\'s; back once the command is', async () => {
    const command = join(h.scratch, 'node-enoent');
    symlinkSync(process.execPath, command);
    const { gateway, lines } = await loggedFakeGateway({}, command);
    gateway.upstream('memory').reconnectBackoff = FAST_BACKOFF;
    const client = await h.client(gateway, await h.token('ro'));
    rmSync(command);
    expect(codeOf(await call(client, 'search_nodes', { query: 'crash' }))).toBe('UPSTREAM_UNAVAILABLE');

    const stillDown = () => lines.filter((l) => l.server === 'memory' && l.msg.startsWith('upstream still down'));
    await until(() => stillDown().length >= 2, 30_000, 'two "upstream still down" log lines');
    const memory = lines.filter((l) => l.server === 'memory');
    const loud = memory.filter((l) => l.msg.startsWith('upstream reconnect failed'));
    expect(loud.map((l) => l.attempt)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    expect(loud[0]!.err).toMatch(/ENOENT/);
    const quiet = stillDown();
    expect(quiet[1]!.attempts! - quiet[0]!.attempts!).toBeGreaterThan(3);
    for (let i = 1; i < quiet.length; i++) expect(quiet[i]!.time - quiet[i - 1]!.time).toBeGreaterThanOrEqual(FAST_BACKOFF.quietLogEveryMs);
    expect(memory.filter((l) => l.msg === 'upstream protocol error')).toHaveLength(0);
    expect(memory.filter((l) => l.level >= 40)).toHaveLength(1 + loud.length + quiet.length);

    symlinkSync(process.execPath, command);
    await until(
      async () => !(await call(client, 'read_graph', {})).isError,
      30_000,
      'read_graph served again',
      100,
    );
  }, 90_000);

  it('closing the gateway during an attempt ends its reconnect loop: nothing is started afterwards', async () => {
    const hold = join(h.scratch, 'close-hold');
    const refused = join(h.scratch, 'close-refused');
    const { gateway, lines } = await loggedFakeGateway({ FAKE_UPSTREAM_HOLD: hold, FAKE_UPSTREAM_REFUSED: refused });
    gateway.upstream('memory').reconnectBackoff = FAST_BACKOFF;
    const client = await h.client(gateway, await h.token('ro'));
    writeFileSync(hold, 'the next starts fail');
    await call(client, 'search_nodes', { query: 'crash' });
    await until(() => lines.some((l) => l.attempt === 2), 30_000, 'the second attempt failed');
    // The third start is under way (it waited 40 ms; a node process takes longer than this to start).
    await new Promise((r) => setTimeout(r, 200));

    await gateway.close();
    const after = lineCount(refused);
    await new Promise((r) => setTimeout(r, 1500));
    expect(lineCount(refused)).toBe(after);
  }, 90_000);

  it('closing the gateway while the reconnect loop waits returns without waiting it out', async () => {
    const hold = join(h.scratch, 'wait-hold');
    const refused = join(h.scratch, 'wait-refused');
    const { gateway, lines } = await loggedFakeGateway({ FAKE_UPSTREAM_HOLD: hold, FAKE_UPSTREAM_REFUSED: refused });
    // A wait of 10 min, far beyond this test's 60 s: a close that waited it out would fail the test.
    gateway.upstream('memory').reconnectBackoff = { ...FAST_BACKOFF, firstDelayMs: 600_000, maxDelayMs: 600_000 };
    const client = await h.client(gateway, await h.token('ro'));
    writeFileSync(hold, 'the next starts fail');
    await call(client, 'search_nodes', { query: 'crash' });
    await until(() => lines.some((l) => l.msg.startsWith('upstream connection closed')), 10_000, 'the upstream closed');

    await gateway.close();
    expect(lineCount(refused)).toBe(0);
  }, 60_000);
});

describe("an upstream's stderr", () => {
  it('is logged a line at a time, each cut to 8 KB: 20 MB without a newline is one cut line, and the upstream keeps serving', async () => {
    // readline kept a line until its newline: ~512 MB without one crashed the gateway (Invalid string length).
    const { gateway, lines } = await loggedFakeGateway({}, undefined, 'debug');
    const client = await h.client(gateway, await h.token('ro'));
    expect(textOf(await call(client, 'search_nodes', { query: 'stderr:20000000' }))).toBe('wrote to stderr');
    const fromStderr = () => lines.filter((l) => l.server === 'memory' && l.msg.startsWith('upstream: '));
    await until(() => fromStderr().some((l) => l.msg === 'upstream: stderr done'), 30_000, 'the line after the long one');
    const long = fromStderr().find((l) => l.msg.includes('more bytes of this line not kept'));
    expect(long?.msg).toBe(`upstream: ${'x'.repeat(8192)}… (${20_000_000 - 8192} more bytes of this line not kept)`);
    expect(textOf(await call(client, 'read_graph', {}))).toContain('Ada knows Grace');
  }, 60_000);
});

describe('upstream protocol errors in the log', () => {
  it('are cut to 2,000 characters and masked: a 1 MB stray progress notification with a token in it is one short warn line', async () => {
    const { gateway, lines } = await loggedFakeGateway({});
    const client = await h.client(gateway, await h.token('ro'));
    expect(textOf(await call(client, 'search_nodes', { query: 'badprogress:1000000' }))).toBe('sent a stray progress notification');
    await until(() => lines.some((l) => l.msg === 'upstream protocol error'), 10_000, 'the protocol error line');
    const err = lines.find((l) => l.msg === 'upstream protocol error')?.err ?? '';
    expect(err.length).toBeLessThan(2_100);
    expect(err).toMatch(/… \(\d{7} characters in all\)$/);
    expect(err).not.toContain('ghp_AbCd');
    expect(textOf(await call(client, 'read_graph', {}))).toContain('Ada knows Grace');
  }, 60_000);
});

describe('stdio lines that are not JSON-RPC messages', () => {
  it('are one warning per run of them, not one per line, and the call and the next ones are answered', async () => {
    const { gateway, lines } = await loggedFakeGateway({});
    const client = await h.client(gateway, await h.token('ro'));
    // 30,000 lines (~100 KB): `{}`, blank and stray text. One warning each was a schema error, an exception
    // and a log line per line (~45 s of the shared event loop per MB of `{}` lines).
    expect(textOf(await call(client, 'search_nodes', { query: 'junk:30000' }))).toBe('wrote junk');
    expect(textOf(await call(client, 'read_graph', {}))).toContain('Ada knows Grace');
    const warnings = lines.filter((l) => l.msg === 'upstream protocol error');
    expect(warnings.length).toBeGreaterThan(0);
    // One per pipe chunk at most (the run is reported when a chunk's lines are read): ~100 KB is a few.
    expect(warnings.length).toBeLessThan(20);
    expect(warnings[0]?.err).toMatch(/^\d+ lines in a row from the upstream were not JSON-RPC messages; the first: /);
  }, 60_000);
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
    expect(err?.message).toMatch(/^MCP error -32010: LARGE_RESULT: /);
    expect((err as Error & { data?: unknown }).data).toMatchObject({ outcome: 'withheld', code: 'LARGE_RESULT' });
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
