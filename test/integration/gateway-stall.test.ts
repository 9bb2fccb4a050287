import type { ChildProcess } from 'node:child_process';
import { createServer, type Server, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { ControlPlaneClient, ControlPlaneError } from '../../src/gateway/control-plane.js';
import { TestContext } from '../helpers/context.js';
import { api, type ChildControlPlane, killChildren, runCli, startChild } from '../helpers/control-plane.js';
import { stall } from '../helpers/stall.js';

// The reference gateway's timeout for its requests to the control plane (killswitch.timeoutMs) after a
// stall of the gateway's own event loop (one loop serves every agent): the timer was due when the loop came
// back, and Node runs due timers before it reads the sockets, so a decision the control plane had answered
// in time failed as 'timeout' and the call was denied DEPENDENCY_UNAVAILABLE. Now the answer that is there
// is used. The control plane is a real `killswitch start` in a child process, so that it answers while
// this process (the gateway) is held.

const t = new TestContext();
const unleash = inject('unleash');
const children: ChildProcess[] = [];
let cp: ChildControlPlane;
let gatewayKey: string;
let token: string;
let silent: Server;
const silentSockets = new Set<Socket>();
const clients: ControlPlaneClient[] = [];

beforeAll(async () => {
  await t.setup();
  const owner = (await runCli(t, unleash, ['operators', 'create', '--role', 'owner', '--name', 'gateway stall test'])).stdout.trim();
  cp = await startChild(t, unleash, {}, children);
  const auth = { authorization: `Bearer ${owner}` };
  gatewayKey = (await api(cp.base, 'POST', '/v1/gateway-keys', auth, { name: 'stall test gateway' })).body.key as string;
  token = (await api(cp.base, 'POST', '/v1/keys', auth, { type: 'ro', role: 'code_agent', project_id: 'alpha', environment: 'development' })).body.token as string;
  // A "control plane" that accepts and never answers.
  silent = createServer((s) => {
    silentSockets.add(s);
    s.on('error', () => {});
  });
  await new Promise<void>((r) => silent.listen(0, '127.0.0.1', () => r()));
}, 120_000);
afterAll(async () => {
  for (const c of clients) c.close();
  for (const s of silentSockets) s.destroy();
  await new Promise<void>((r) => silent.close(() => r()));
  killChildren(children);
  await t.teardown();
});

function client(url: string, timeoutMs: number): ControlPlaneClient {
  const c = new ControlPlaneClient({ url, gatewayKey, timeoutMs });
  clients.push(c);
  return c;
}

/** Holds the loop right after the request was written (a keep-alive socket takes it at the next tick), before any read of a socket. */
const stallOnceWritten = (ms: number) => new Promise<void>((resolve) => setImmediate(() => resolve(stall(ms))));

const read = { server: 'filesystem', tool: 'read_text_file', arguments: { path: 'docs/a.md' } };

describe("the gateway's wait for the control plane's answer", () => {
  it('an answer that arrived while the gateway was held is used, not failed as timed out (the stall is 5 times timeoutMs)', async () => {
    const c = client(cp.base, 500);
    // Also opens the keep-alive connection the decision below is sent on.
    const { session_id } = await c.openSession(token, {});
    const decision = c.decide(token, { ...read, session_id });
    await stallOnceWritten(2_500);
    expect(await decision).toMatchObject({ decision: 'allow', code: 'OK' });
  });

  it('a control plane that does not answer still fails closed as a timeout, after a stall too', async () => {
    const c = client(`http://127.0.0.1:${(silent.address() as { port: number }).port}`, 200);
    const failure = (p: Promise<unknown>) =>
      p.then(
        () => undefined,
        (err: unknown) => (err instanceof ControlPlaneError ? err.failure : err),
      );
    expect(await failure(c.decide(token, { ...read, session_id: 'none' }))).toBe('timeout');
    const held = failure(c.decide(token, { ...read, session_id: 'none' }));
    await stallOnceWritten(1_000);
    expect(await held).toBe('timeout');
  });
});
