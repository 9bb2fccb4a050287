import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { Redis, type RedisOptions } from 'ioredis';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { ConfigError } from '../../src/config.js';
import { RESUBSCRIBE_RETRY_MS } from '../../src/redis/client.js';
import { redisAclRule } from '../../src/redis/server-check.js';
import { TestContext } from '../helpers/context.js';
import { childEnv, spawnStart, startChild } from '../helpers/control-plane.js';
import { GatewayDriver } from '../helpers/gateway-client.js';
import { makeTlsFiles, type TlsFiles } from '../helpers/tls.js';
import { freePort, until } from '../helpers/unleash.js';

// Redis as a managed service or a hardened self-hosted one runs it (docs/operations.md, "Managed Redis"):
// redis-servers of this file's own, on free ports: one with an ACL user restricted to what
// redisAclRule() grants, one speaking TLS only (a CA made here, so the control plane must be told to trust
// it: a child process with NODE_EXTRA_CA_CERTS), one in cluster mode.

const POLICY = 'test/fixtures/decisions/policy.yaml';
const unleash = inject('unleash');
const t = new TestContext();
const servers: ChildProcess[] = [];
const children: ChildProcess[] = [];
const PASSWORD = 'pw-never-printed-7f3a';
let tls: TlsFiles;

/** A redis-server of its own with these extra arguments, and an admin connection to it. */
async function redisServer(
  args: (port: number, extraPort: number) => string[],
  admin: (port: number) => RedisOptions,
): Promise<{ port: number; admin: Redis }> {
  const port = await freePort();
  // A second port for a server that needs one (cluster mode's bus, which by default is port + 10000: in
  // the kernel's ephemeral range, where an outgoing connection of another test may hold it).
  const extraPort = await freePort();
  const server = spawn('redis-server', ['--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', ...args(port, extraPort)], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  servers.push(server);
  let output = '';
  for (const stream of [server.stdout, server.stderr]) stream?.on('data', (chunk: Buffer) => (output = (output + chunk.toString()).slice(-4000)));
  const conn = new Redis({ host: '127.0.0.1', port, lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null, ...admin(port) });
  conn.on('error', () => {});
  await until(
    async () => {
      if (server.exitCode !== null) throw new Error(`the test redis-server exited with ${server.exitCode}:\n${output}`);
      try {
        if (conn.status !== 'ready') await conn.connect();
        return (await conn.ping()) === 'PONG';
      } catch {
        return false;
      }
    },
    15_000,
    'the test redis-server to start',
    50,
  );
  return { port, admin: conn };
}

const read = (sessionId: string) => ({ session_id: sessionId, server: 'filesystem', tool: 'read_text_file', arguments: { path: 'a.md' } });

beforeAll(async () => {
  await t.setup();
  tls = makeTlsFiles();
});

afterAll(async () => {
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
  for (const s of servers) s.kill('SIGKILL');
  await Promise.all(servers.map((s) => (s.exitCode === null ? once(s, 'exit') : undefined)));
  tls?.remove();
  await t.teardown();
});

describe('an ACL user with least privilege', () => {
  let port: number;
  let admin: Redis;
  const url = () => `redis://ks:${PASSWORD}@127.0.0.1:${port}`;
  const setUser = (rule: string) => admin.call('ACL', 'SETUSER', 'ks', 'reset', ...rule.split(' '), `>${PASSWORD}`);

  beforeAll(async () => {
    ({ port, admin } = await redisServer(
      (p) => ['--port', String(p)],
      () => ({}),
    ));
  });

  it('redisAclRule(REDIS_PREFIX) is enough: the start, sessions, decisions, a halt, and Redis logs no denial', { timeout: 60_000 }, async () => {
    await setUser(redisAclRule(t.redisPrefix));
    await admin.call('ACL', 'LOG', 'RESET');
    const app = await t.app({ policyFile: POLICY, redisUrl: url() });
    const gw = await new GatewayDriver(t, app).init();
    const tok = await gw.token('rw');
    const s = await gw.session(tok.raw, { read_only: true });
    expect((await gw.decide(tok.raw, read(s.session_id))).code).toBe('OK');
    // A write in a read-only session halts it (the halt's scripts, the journal, pub/sub).
    expect((await gw.decide(tok.raw, { session_id: s.session_id, server: 'filesystem', tool: 'write_file', arguments: { path: 'a.md', content: 'x' } })).decision).toBe('deny');
    expect((await gw.decide(tok.raw, read(s.session_id))).code).toBe('SESSION_HALTED');
    expect((await app.inject({ method: 'GET', url: '/readyz' })).json().ready).toBe(true);
    const denials = (await admin.call('ACL', 'LOG')) as unknown[][];
    expect(denials.map((entry) => String(entry))).toEqual([]);
  });

  it("the channels taken away from a running control plane (Redis disconnects its subscriber): its re-subscribe is refused without an unhandled rejection, which crashed the process; given back, they are subscribed again within RESUBSCRIBE_RETRY_MS (granting causes no reconnect)", { timeout: 60_000 }, async () => {
    await setUser(redisAclRule(t.redisPrefix));
    const app = await t.app({ policyFile: POLICY, redisUrl: url() });
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown) => unhandled.push(reason);
    process.on('unhandledRejection', onUnhandled);
    try {
      const revocations = app.ctx.redis.channel('credentials:revoked');
      const subscribers = async () => Number(((await admin.call('PUBSUB', 'NUMSUB', revocations)) as [string, number])[1]);
      // This file's other apps share the prefix (and the user): each replica subscribes once.
      const replicas = await subscribers();
      expect(replicas).toBeGreaterThanOrEqual(1);
      await admin.call('ACL', 'LOG', 'RESET');
      await admin.call('ACL', 'SETUSER', 'ks', 'resetchannels');
      // Reconnected, and its subscribe refused (Redis logs the denied channel).
      await until(async () => ((await admin.call('ACL', 'LOG')) as unknown[]).length > 0 && app.ctx.redis.sub.status === 'ready', 15_000, 'the re-subscribe refused');
      await new Promise((r) => setTimeout(r, 500));
      expect(unhandled).toEqual([]);
      expect(await subscribers()).toBe(0);
      await admin.call('ACL', 'SETUSER', 'ks', `&${t.redisPrefix}ch:*`);
      // The revocations of other replicas are heard again: before, only after the next reconnect.
      await until(async () => (await subscribers()) === replicas, RESUBSCRIBE_RETRY_MS * 3, 'the revocation channel subscribed again');
      const channels = (await admin.call('PUBSUB', 'CHANNELS', `${t.redisPrefix}ch:*`)) as string[];
      expect(channels.length).toBeGreaterThanOrEqual(5);
    } finally {
      process.off('unhandledRejection', onUnhandled);
      await admin.call('ACL', 'SETUSER', 'ks', `&${t.redisPrefix}ch:*`);
    }
  });

  it('a user without a command, or kept to other keys and channels: the start is refused naming what is missing (exit 2 for `killswitch start`)', { timeout: 60_000 }, async () => {
    await setUser(redisAclRule(t.redisPrefix).replace(' +lrem', '').replace(' +info', ''));
    const refused = await t.app({ policyFile: POLICY, redisUrl: url() }).then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(refused).toBeInstanceOf(ConfigError);
    expect((refused as ConfigError).variable).toBe('REDIS_URL');
    expect((refused as Error).message).toMatch(/^REDIS_URL's user may not use what the control plane needs in Redis: command info, command lrem\. .*ACL SETUSER <user> on resetkeys ~kst:/);
    expect((refused as Error).message).not.toContain(PASSWORD);

    await setUser(redisAclRule('other:'));
    const elsewhere = await t.app({ policyFile: POLICY, redisUrl: url() }).then(
      () => undefined,
      (err: unknown) => err as Error,
    );
    expect(elsewhere?.message).toContain(`keys ${t.redisPrefix}*, channels ${t.redisPrefix}ch:*`);
  });

  it('a permission taken away after the start: decisions deny DEPENDENCY_UNAVAILABLE saying NOPERM, also from inside the gate script', { timeout: 60_000 }, async () => {
    await setUser(redisAclRule(t.redisPrefix));
    const app = await t.app({ policyFile: POLICY, redisUrl: url() });
    const gw = await new GatewayDriver(t, app).init();
    const tok = await gw.token('rw');
    const s = await gw.session(tok.raw);
    expect((await gw.decide(tok.raw, read(s.session_id))).code).toBe('OK');
    // PEXPIRE is called inside the gate script: Redis 7.0 words that refusal "ERR The user executing the script can't run this command".
    for (const taken of ['-pexpire', '-evalsha']) {
      await admin.call('ACL', 'SETUSER', 'ks', taken);
      const d = await gw.decide(tok.raw, read(s.session_id));
      expect(d).toMatchObject({ decision: 'deny', code: 'DEPENDENCY_UNAVAILABLE' });
      expect(d.message).toMatch(/^Redis \(sessions, halts and limits\) answered with an error \(NOPERM: the REDIS_URL user lacks a permission the control plane needs\)/);
      await admin.call('ACL', 'SETUSER', 'ks', taken.replace('-', '+'));
    }
  });
});

describe('Redis in cluster mode', () => {
  it('the start is refused (REDIS_URL: cluster mode is not supported) instead of denying every decision with "sessions are being reloaded"', { timeout: 60_000 }, async () => {
    const { port, admin } = await redisServer(
      (p, bus) => ['--port', String(p), '--cluster-enabled', 'yes', '--cluster-port', String(bus), '--cluster-config-file', `${t.dataDir}-nodes-${p}.conf`],
      () => ({}),
    );
    await admin.call('CLUSTER', 'ADDSLOTSRANGE', '0', '16383');
    const refused = await t.app({ policyFile: POLICY, redisUrl: `redis://127.0.0.1:${port}` }).then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(refused).toBeInstanceOf(ConfigError);
    expect((refused as Error).message).toMatch(/^REDIS_URL names a Redis in cluster mode \(INFO cluster: cluster_enabled:1\), which the control plane does not support/);
  });
});

describe('a read-only replica', () => {
  it('the start is refused (REDIS_URL names a read-only replica), as a reader endpoint would be', { timeout: 60_000 }, async () => {
    // A replica of nothing: role:slave all the same.
    const { port } = await redisServer(
      (p) => ['--port', String(p), '--replicaof', '127.0.0.1', '1'],
      () => ({}),
    );
    const refused = await t.app({ policyFile: POLICY, redisUrl: `redis://127.0.0.1:${port}` }).then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(refused).toBeInstanceOf(ConfigError);
    expect((refused as Error).message).toMatch(/^REDIS_URL names a read-only replica \(INFO replication: role:slave\)/);
  });
});

describe('TLS (rediss://) with a private CA', () => {
  let port: number;
  const url = () => `rediss://ks:${PASSWORD}@localhost:${port}`;

  beforeAll(async () => {
    ({ port } = await redisServer(
      (p) => ['--port', '0', '--tls-port', String(p), '--tls-cert-file', tls.serverCert, '--tls-key-file', tls.serverKey, '--tls-ca-cert-file', tls.ca, '--tls-auth-clients', 'no', '--user', 'default', 'off', '--user', 'ks', 'on', `>${PASSWORD}`, ...redisAclRule(t.redisPrefix).split(' ').slice(1)],
      () => ({ tls: { ca: [readFileSync(tls.ca)] }, host: 'localhost', username: 'ks', password: PASSWORD }),
    ));
  });

  it('with NODE_EXTRA_CA_CERTS naming the CA: ready, and a decision is allowed over TLS', { timeout: 90_000 }, async () => {
    // Credentials in Postgres, made through an instance on the test Redis; the child decides on the TLS one.
    const maker = await t.app({ policyFile: POLICY });
    const gw = await new GatewayDriver(t, maker).init();
    const tok = await gw.token('rw');
    const child = await startChild(t, unleash, { REDIS_URL: url(), NODE_EXTRA_CA_CERTS: tls.ca }, children);
    const post = (path: string, body: unknown) =>
      fetch(`${child.base}${path}`, { method: 'POST', headers: { ...gw.headers(tok.raw), 'content-type': 'application/json' }, body: JSON.stringify(body) }).then((r) => r.json() as Promise<Record<string, string>>);
    const s = await post('/v1/sessions', {});
    expect((await post('/v1/decisions', read(s['session_id']!)))['code']).toBe('OK');
    child.child.kill('SIGTERM');
    await child.exited;
    const { stdout, stderr } = child.output();
    expect(stdout + stderr).not.toContain(PASSWORD);
  });

  it('without it: the replica starts but is not ready (decisions deny), and its start log says the certificate is not trusted and what to set (never the password)', { timeout: 60_000 }, async () => {
    const port = await freePort();
    const env = childEnv(t, unleash, port, { REDIS_URL: url() });
    delete env['NODE_EXTRA_CA_CERTS'];
    const { child, output } = spawnStart(env, children);
    const out = () => output().stdout + output().stderr;
    await until(() => out().includes('Redis not reachable at start'), 45_000, 'the start to give up waiting for Redis', 50);
    const line = JSON.parse(output().stdout.split('\n').find((l) => l.includes('Redis not reachable at start'))!) as { err: string };
    expect(line.err).toMatch(/last error: self-signed certificate in certificate chain \(Redis's TLS certificate is not signed by a CA this process trusts: set NODE_EXTRA_CA_CERTS/);
    let ready: { status: number; body: { checks?: Record<string, string> } } | undefined;
    await until(
      async () => {
        ready = await fetch(`http://127.0.0.1:${port}/readyz`).then(
          async (r) => ({ status: r.status, body: (await r.json()) as { checks?: Record<string, string> } }),
          () => undefined,
        );
        return ready !== undefined;
      },
      30_000,
      'the replica to listen',
      100,
    );
    expect(ready).toMatchObject({ status: 503, body: { checks: { redis: 'not ready' } } });
    child.kill('SIGKILL');
    await once(child, 'exit');
    expect(out()).not.toContain(PASSWORD);
  });
});
