// biome-ignore-all lint/suspicious/noTemplateCurlyInString: ${env:NAME} is the config syntax under test, not a template string.
import { type ChildProcessWithoutNullStreams, spawn } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { until } from '../helpers/unleash.js';
import { GatewayHarness } from './gateway-harness.js';

// How `killswitch gateway` ends: over stdio, when its client goes away (stdin ends), it stops its
// upstreams and closes its control-plane session, so restarts neither leave orphans nor use up the
// token's open sessions. A SIGTERM while an upstream is still starting stops that upstream too.

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const BIN = fileURLToPath(new URL('../../bin/killswitch.js', import.meta.url));
const FAKE_UPSTREAM = fileURLToPath(new URL('./gateway-fake-upstream.mjs', import.meta.url));
const h = new GatewayHarness();
const children: ChildProcessWithoutNullStreams[] = [];

beforeAll(async () => {
  // One open session per token: a restart that left its session open would lock the token out.
  await h.start({ policyExtra: 'rate_limits:\n  per_token:\n    max_open_sessions: 1\n' });
}, 120_000);
afterAll(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  await h.stop();
});

/** Running, not a zombie waiting to be reaped. */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  const stat = existsSync(`/proc/${pid}/stat`) ? readFileSync(`/proc/${pid}/stat`, 'utf8') : '';
  return !/^\d+ \(.*\) Z/.test(stat);
}

interface StdioGateway {
  child: ChildProcessWithoutNullStreams;
  upstreamPid: number;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  stderr: () => string;
}

/**
 * `killswitch gateway --config file` with pipes for stdin/stdout, as a desktop client starts it, its
 * "memory" server the fake stdio upstream (which records its pid). Returns once the client's initialize
 * was answered and the initialized notification sent (the gateway opens its control-plane session then).
 */
async function stdioGateway(agentToken: string, name: string): Promise<StdioGateway> {
  const starts = join(h.scratch, `${name}.starts`);
  const file = join(h.scratch, `${name}.json`);
  writeFileSync(
    file,
    JSON.stringify({
      mcpServers: { memory: { command: process.execPath, args: [FAKE_UPSTREAM], cwd: ROOT, env: { FAKE_UPSTREAM_STARTS: starts } } },
      killswitch: { url: h.url, gatewayKey: '${env:KILLSWITCH_GATEWAY_KEY}', agentToken: '${env:KILLSWITCH_AGENT_TOKEN}', timeoutMs: 15_000, startTimeoutMs: 60_000 },
    }),
  );
  const child = spawn(process.execPath, [BIN, 'gateway', '--config', file, '--log-level', 'info'], {
    env: { ...process.env, KILLSWITCH_GATEWAY_KEY: h.gatewayKey, KILLSWITCH_AGENT_TOKEN: agentToken },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  children.push(child);
  let err = '';
  child.stderr.on('data', (c: Buffer) => {
    err += c.toString('utf8');
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  let out = '';
  const initialized = new Promise<void>((resolve, reject) => {
    child.stdout.on('data', (c: Buffer) => {
      out += c.toString('utf8');
      if (out.split('\n').some((line) => line.includes('"id":1') && line.includes('"result"'))) resolve();
    });
    child.once('exit', () => reject(new Error(`gateway exited before answering initialize: ${err}`)));
  });
  child.stdin.write(`${JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'lifecycle-test', version: '1' } } })}\n`);
  await initialized;
  child.stdin.write(`${JSON.stringify({ jsonrpc: '2.0', method: 'notifications/initialized' })}\n`);
  const pids = readFileSync(starts, 'utf8').trim().split('\n');
  expect(pids).toHaveLength(1);
  return { child, upstreamPid: Number(pids[0]), exited, stderr: () => err };
}

describe('stdio: the client goes away', () => {
  it('stdin ends: the gateway exits 0 and its upstream process is gone', async () => {
    const token = await h.token('ro');
    const g = await stdioGateway(token, 'stdin-end');
    expect(alive(g.upstreamPid)).toBe(true);
    g.child.stdin.end();
    const { code, signal } = await g.exited;
    expect({ code, signal }, g.stderr()).toEqual({ code: 0, signal: null });
    expect(g.stderr()).toContain('stdin ended');
    expect(alive(g.upstreamPid)).toBe(false);
  }, 60_000);
});

describe('the control-plane session ends with the gateway', () => {
  const sessionsOf = async (token: string) => {
    const agent = await h.app.ctx.auth.authenticate(token);
    const { rows } = await h.t.pool().query<{ id: string; state: string }>('SELECT id, state FROM sessions WHERE token_id = $1 ORDER BY id', [agent.id]);
    return rows;
  };

  it('a restarted stdio gateway opens its session again with max_open_sessions 1: the first one was closed when stdin ended', async () => {
    const token = await h.token('ro');
    for (const run of ['first', 'second']) {
      const g = await stdioGateway(token, `restart-${run}`);
      // The session opens on the initialized notification.
      await until(async () => (await sessionsOf(token)).some((s) => s.state === 'active'), 20_000, `the ${run} gateway opened its session`);
      g.child.stdin.end();
      expect((await g.exited).code, g.stderr()).toBe(0);
      expect(g.stderr()).not.toContain('TOO_MANY_SESSIONS');
    }
    const sessions = await sessionsOf(token);
    expect(sessions.map((s) => s.state)).toEqual(['closed', 'closed']);
  }, 90_000);

  it('an in-process gateway closes its sessions when it closes; a halted one stays halted', async () => {
    const token = await h.token('rw');
    const gateway = await h.gateway({ agentToken: token });
    const client = await h.client(gateway, token);
    await client.listTools();
    await until(async () => (await sessionsOf(token)).length === 1, 20_000, 'the session opened');
    await client.close();
    await until(async () => (await sessionsOf(token))[0]?.state === 'closed', 20_000, 'the session closed with its client');

    const halted = await h.token('rw');
    const g2 = await h.gateway({ agentToken: halted });
    const c2 = await h.client(g2, halted, { scope: { read_only: true } });
    const write = await c2.callTool({ name: 'write_file', arguments: { path: 'nope.md', content: 'x' } });
    expect(write.isError).toBe(true);
    await g2.close();
    expect((await sessionsOf(halted)).map((s) => s.state)).toEqual(['halted']);
  }, 60_000);
});

describe('signals', () => {
  /** A stdio `killswitch gateway --config file` whose one upstream is `node <upstream.args>`. */
  function gatewayProcess(name: string, upstream: { args: string[]; env?: Record<string, string> }, agentToken: string) {
    const file = join(h.scratch, `${name}.json`);
    writeFileSync(
      file,
      JSON.stringify({
        mcpServers: { memory: { command: process.execPath, args: upstream.args, cwd: ROOT, env: upstream.env ?? {} } },
        killswitch: {
          url: h.url,
          gatewayKey: '${env:KILLSWITCH_GATEWAY_KEY}',
          agentToken: '${env:KILLSWITCH_AGENT_TOKEN}',
          timeoutMs: 15_000,
          startTimeoutMs: 60_000,
        },
      }),
    );
    const child = spawn(process.execPath, [BIN, 'gateway', '--config', file, '--log-level', 'info'], {
      env: { ...process.env, KILLSWITCH_GATEWAY_KEY: h.gatewayKey, KILLSWITCH_AGENT_TOKEN: agentToken },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    children.push(child);
    let err = '';
    child.stderr.on('data', (c: Buffer) => {
      err += c.toString('utf8');
    });
    child.stdout.resume();
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
    return { child, exited, stderr: () => err };
  }

  const upstreamPids = (file: string): number[] =>
    existsSync(file)
      ? readFileSync(file, 'utf8')
          .trim()
          .split('\n')
          .filter(Boolean)
          .map(Number)
      : [];

  /**
   * A stdio gateway whose upstream never answers initialize nor reads its stdin (`npx -y` while it
   * downloads, a container starting), once that upstream runs; `ignoreSigterm`: it ignores SIGTERM too.
   */
  async function gatewayWithSilentUpstream(name: string, ignoreSigterm: boolean) {
    const starts = join(h.scratch, `${name}.starts`);
    const script = join(h.scratch, `${name}-upstream.cjs`);
    writeFileSync(script, `${ignoreSigterm ? "process.on('SIGTERM', () => {});\n" : ''}require('node:fs').appendFileSync(process.env.UPSTREAM_STARTS, \`\${process.pid}\\n\`);\nsetTimeout(() => {}, 60_000);\n`);
    const g = gatewayProcess(name, { args: [script], env: { UPSTREAM_STARTS: starts } }, await h.token('ro'));
    const deadline = Date.now() + 30_000;
    while (upstreamPids(starts).length === 0) {
      if (g.child.exitCode !== null || Date.now() > deadline) throw new Error(`no upstream started (exit ${g.child.exitCode}):\n${g.stderr()}`);
      await new Promise((r) => setTimeout(r, 5));
    }
    return { g, upstream: upstreamPids(starts)[0] };
  }

  it('stdio: SIGTERM while an upstream is still starting stops that upstream too (exit 0), not leaving it orphaned', async () => {
    // An upstream that is slow to answer initialize and does not read its stdin meanwhile (`npx -y` while it
    // downloads, a container starting): the gateway's end does not end it; only the gateway stopping it does.
    const { g, upstream } = await gatewayWithSilentUpstream('starting-signal', false);
    g.child.kill('SIGTERM');
    const ended = await g.exited;
    // Whatever the gateway's end, its upstream must not outlive it for long (the SDK's close takes up to ~4 s).
    await until(() => !alive(upstream!), 10_000, 'the starting upstream to exit').catch(() => {});
    const upstreamAlive = alive(upstream!);
    if (upstreamAlive) process.kill(upstream!, 'SIGKILL');
    expect({ ...ended, upstreamAlive }, g.stderr()).toEqual({ code: 0, signal: null, upstreamAlive: false });
    expect(g.stderr()).toMatch(/"why":"SIGTERM".*"msg":"gateway stopping"/);
  }, 60_000);

  it('a Ctrl-C under npx (SIGINT from the terminal, then npm\'s copy a few ms later) stops once: exit 0, not ended by the copy', async () => {
    const g = await stdioGateway(await h.token('ro'), 'ctrl-c-twice');
    g.child.kill('SIGINT');
    await new Promise((r) => setTimeout(r, 15));
    g.child.kill('SIGINT');
    const ended = await g.exited;
    expect(ended, g.stderr()).toEqual({ code: 0, signal: null });
    expect(g.stderr().match(/"msg":"gateway stopping"/g)).toHaveLength(1);
    expect(g.stderr()).toContain('the same signal again at once');
    await until(() => !alive(g.upstreamPid), 10_000, 'the upstream to exit');
  }, 60_000);

  it('a second signal while a stop hangs (an upstream that ignores SIGTERM) exits at once, 130 for SIGINT', async () => {
    const { g, upstream } = await gatewayWithSilentUpstream('stubborn', true);
    try {
      g.child.kill('SIGTERM');
      // The stop waits for the upstream (the SDK escalates to SIGKILL within about 4 s); the operator does not.
      await until(() => g.stderr().includes('"msg":"gateway stopping"'), 10_000, 'the stop to begin');
      await new Promise((r) => setTimeout(r, 600));
      g.child.kill('SIGINT');
      const ended = await g.exited;
      expect(ended, g.stderr()).toEqual({ code: 130, signal: null });
      expect(g.stderr()).toMatch(/"signal":"SIGINT".*"msg":"second signal: exiting now/);
    } finally {
      if (alive(upstream!)) process.kill(upstream!, 'SIGKILL');
    }
  }, 60_000);
});
