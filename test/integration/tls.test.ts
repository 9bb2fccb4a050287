import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { promisify } from 'node:util';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ControlPlaneClient, ControlPlaneError } from '../../src/gateway/control-plane.js';
import { killswitch } from '../helpers/cli.js';
import { bearer, TestContext } from '../helpers/context.js';
import { GatewayDriver } from '../helpers/gateway-client.js';
import { makeTlsFiles, type TlsFiles } from '../helpers/tls.js';

// The API over HTTPS (TLS_CERT_FILE, TLS_KEY_FILE) and with mutual TLS (TLS_CLIENT_CA_FILE): a real
// listener, real handshakes, and the reference gateway's control-plane client with its killswitch.tls files.

const POLICY = 'test/fixtures/decisions/policy.yaml';
const execFileP = promisify(execFile);
const t = new TestContext();
let pki: TlsFiles;

beforeAll(async () => {
  await t.setup();
  pki = makeTlsFiles();
});
afterAll(async () => {
  await t.teardown();
  pki.remove();
});

async function listening(app: FastifyInstance): Promise<string> {
  await app.listen({ host: '127.0.0.1', port: 0 });
  return `https://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
}

// The server's alert, or ECONNRESET when the socket closes before the client has read it (timing): either
// way no HTTP answer, so no route ran.
const NO_CLIENT_CERTIFICATE = /^(ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED|ECONNRESET|EPIPE)$/;
const UNKNOWN_CA = /^(ERR_SSL_TLSV1_ALERT_UNKNOWN_CA|ECONNRESET|EPIPE)$/;

/** GET over HTTPS with a fresh connection: the status, or the TLS/socket error code. */
function get(url: string, tls: { ca?: string; cert?: string; key?: string }, headers: Record<string, string> = {}): Promise<{ status: number } | { error: string }> {
  const read = (f: string | undefined) => (f === undefined ? undefined : readFileSync(f));
  const options: https.RequestOptions = { agent: false, headers };
  for (const [k, v] of Object.entries({ ca: read(tls.ca), cert: read(tls.cert), key: read(tls.key) })) if (v) Object.assign(options, { [k]: v });
  return new Promise((resolve) => {
    const req = https.get(url, options, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode ?? 0 }));
    });
    req.on('error', (err: NodeJS.ErrnoException) => resolve({ error: err.code ?? err.message }));
  });
}

/** The Docker image's health check (scripts/docker/healthcheck.js) against a listener here, as the container runs it. */
async function healthcheck(base: string, env: Record<string, string>): Promise<{ code: number; stderr: string }> {
  const { port } = new URL(base);
  try {
    const { stderr } = await execFileP('node', ['scripts/docker/healthcheck.js'], { env: { PATH: process.env['PATH'] ?? '', HOST: '0.0.0.0', PORT: port, ...env }, timeout: 15_000 });
    return { code: 0, stderr };
  } catch (err) {
    const e = err as { code: number; stderr: string };
    return { code: e.code, stderr: e.stderr };
  }
}

describe('TLS_CERT_FILE and TLS_KEY_FILE: the API over HTTPS', () => {
  let base: string;
  let app: FastifyInstance;
  beforeAll(async () => {
    app = await t.app({ policyFile: POLICY, tlsCertFile: pki.serverCert, tlsKeyFile: pki.serverKey });
    base = await listening(app);
  });

  it('a client that trusts the CA gets 200, with the operator key checked as over HTTP', async () => {
    expect(await get(`${base}/healthz`, { ca: pki.ca })).toEqual({ status: 200 });
    const owner = await t.operatorKey(app, 'owner');
    expect(await get(`${base}/v1/operator-keys`, { ca: pki.ca }, bearer(owner))).toEqual({ status: 200 });
    expect(await get(`${base}/v1/operator-keys`, { ca: pki.ca })).toEqual({ status: 401 });
  });

  it('the certificate is really verified: a client without the CA refuses the server', async () => {
    expect(await get(`${base}/healthz`, {})).toEqual({ error: 'UNABLE_TO_VERIFY_LEAF_SIGNATURE' });
  });

  it("the image's health check asks over HTTPS with TLS_CERT_FILE set (the certificate names clients' address, not loopback) and fails over plain HTTP", async () => {
    expect(await healthcheck(base, { TLS_CERT_FILE: pki.serverCert })).toEqual({ code: 0, stderr: '' });
    const plain = await healthcheck(base, {});
    expect(plain.code).toBe(1);
    expect(plain.stderr).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/healthz: /);
  });

  it('no client certificate is asked for without TLS_CLIENT_CA_FILE', async () => {
    expect(await get(`${base}/healthz`, { ca: pki.ca, cert: pki.otherClientCert, key: pki.otherClientKey })).toEqual({ status: 200 });
  });
});

describe('TLS_CLIENT_CA_FILE: mutual TLS', () => {
  let base: string;
  let driver: GatewayDriver;
  let operator: string;
  beforeAll(async () => {
    const app = await t.app({ policyFile: POLICY, tlsCertFile: pki.serverCert, tlsKeyFile: pki.serverKey, tlsClientCaFile: pki.ca });
    base = await listening(app);
    driver = await new GatewayDriver(t, app).init();
    operator = await t.operatorKey(app, 'operator');
  });

  it('a client without a certificate is refused during the TLS handshake, on every route', async () => {
    for (const path of ['/healthz', '/v1/sessions']) {
      const answer = await get(`${base}${path}`, { ca: pki.ca });
      expect(answer, path).toEqual({ error: expect.stringMatching(NO_CLIENT_CERTIFICATE) });
    }
  });

  it('a client certificate another CA signed is refused; one the client CA signed gets 200', async () => {
    expect(await get(`${base}/healthz`, { ca: pki.ca, cert: pki.otherClientCert, key: pki.otherClientKey })).toEqual({ error: expect.stringMatching(UNKNOWN_CA) });
    expect(await get(`${base}/healthz`, { ca: pki.ca, cert: pki.clientCert, key: pki.clientKey })).toEqual({ status: 200 });
  });

  it("the gateway's control-plane client with killswitch.tls's CA, certificate and key opens a session and gets decisions", async () => {
    const token = await driver.token('ro');
    const client = new ControlPlaneClient({
      url: base,
      gatewayKey: driver.gatewayKey,
      timeoutMs: 5_000,
      tls: { ca: readFileSync(pki.ca), cert: readFileSync(pki.clientCert), key: readFileSync(pki.clientKey) },
    });
    try {
      const session = await client.openSession(token.raw, {});
      expect(session.session_id).toMatch(/^[0-9a-f-]{36}$/);
      const decision = await client.decide(token.raw, { session_id: session.session_id, server: 'filesystem', tool: 'read_text_file', arguments: { path: 'docs/a.md' } });
      expect(decision.decision).toBe('allow');
    } finally {
      client.close();
    }
  });

  it('without its client certificate the gateway is refused, and says which TLS error', async () => {
    const token = await driver.token('ro');
    const client = new ControlPlaneClient({ url: base, gatewayKey: driver.gatewayKey, timeoutMs: 5_000, tls: { ca: readFileSync(pki.ca) } });
    try {
      const err = await client.openSession(token.raw, {}).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(ControlPlaneError);
      expect((err as ControlPlaneError).failure).toBe('unreachable');
      expect((err as ControlPlaneError).message).toMatch(/^control plane unreachable \((\w+)\)$/);
      expect((err as ControlPlaneError).message.slice('control plane unreachable ('.length, -1)).toMatch(NO_CLIENT_CERTIFICATE);
    } finally {
      client.close();
    }
  });
  it('the operator CLI presents KILLSWITCH_CLIENT_CERT_FILE and KILLSWITCH_CLIENT_KEY_FILE: a break-glass kill works; without them it says what to set', async () => {
    const env = { KILLSWITCH_URL: base, KILLSWITCH_OPERATOR_KEY: operator, NODE_EXTRA_CA_CERTS: pki.ca, LOG_LEVEL: 'warn' };
    const without = await killswitch(['kills'], { env });
    expect(without.code).toBe(1);
    expect(without.stderr).toMatch(/^killswitch: cannot reach the control plane at https:\/\/127\.0\.0\.1:\d+ \(KILLSWITCH_URL\): (ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED|ECONNRESET|EPIPE)\b/);
    expect(without.stderr).toContain('If the control plane requires mutual TLS (TLS_CLIENT_CA_FILE), set KILLSWITCH_CLIENT_CERT_FILE and KILLSWITCH_CLIENT_KEY_FILE');

    const withCertificate = { ...env, KILLSWITCH_CLIENT_CERT_FILE: pki.clientCert, KILLSWITCH_CLIENT_KEY_FILE: pki.clientKey };
    const killed = await killswitch(['kill', '--server', 'filesystem', '--capability', 'write', '--reason', 'INC-7 drill', '--json'], { env: withCertificate });
    expect(killed.code, killed.stderr).toBe(0);
    const id = JSON.parse(killed.stdout).kill.id as string;
    const token = await driver.token('rw');
    const session = (await driver.session(token.raw)).session_id;
    expect((await driver.decide(token.raw, { session_id: session, server: 'filesystem', tool: 'write_file', arguments: { path: 'a.md', content: 'x' } })).code).toBe('KILL_SWITCH');
    expect((await killswitch(['kills'], { env: withCertificate })).stdout).toContain(id);
    // `killswitch status` goes the same way: every read (GET /readyz included) with the certificate.
    const status = await killswitch(['status', '--json'], { env: withCertificate });
    expect(status.code, status.stderr).toBe(0);
    expect(JSON.parse(status.stdout)).toMatchObject({ exit_code: 0, errors: [], readiness: { ready: true }, kills: { count: 1 } });
    const statusWithout = await killswitch(['status'], { env });
    expect(statusWithout.code).toBe(1);
    expect(statusWithout.stderr).toContain('If the control plane requires mutual TLS (TLS_CLIENT_CA_FILE), set KILLSWITCH_CLIENT_CERT_FILE and KILLSWITCH_CLIENT_KEY_FILE');
    const lifted = await killswitch(['unkill', id, '--reason', 'drill over'], { env: withCertificate });
    expect(lifted.code, lifted.stderr).toBe(0);

    const otherCa = await killswitch(['kills'], { env: { ...env, KILLSWITCH_CLIENT_CERT_FILE: pki.otherClientCert, KILLSWITCH_CLIENT_KEY_FILE: pki.otherClientKey } });
    expect(otherCa.code).toBe(1);
    expect(otherCa.stderr).toMatch(/\(KILLSWITCH_URL\): (ERR_SSL_TLSV1_ALERT_UNKNOWN_CA|ECONNRESET|EPIPE)\b/);
  });
  it("the image's health check under mutual TLS presents KILLSWITCH_CLIENT_CERT_FILE and KILLSWITCH_CLIENT_KEY_FILE; without them it says what to set", async () => {
    const tls = { TLS_CERT_FILE: pki.serverCert, TLS_CLIENT_CA_FILE: pki.ca };
    expect(await healthcheck(base, { ...tls, KILLSWITCH_CLIENT_CERT_FILE: pki.clientCert, KILLSWITCH_CLIENT_KEY_FILE: pki.clientKey })).toEqual({ code: 0, stderr: '' });
    const without = await healthcheck(base, tls);
    expect(without.code).toBe(1);
    expect(without.stderr).toContain('TLS_CLIENT_CA_FILE requires a client certificate on every connection: set KILLSWITCH_CLIENT_CERT_FILE and KILLSWITCH_CLIENT_KEY_FILE');
  });
});

describe('the operator CLI refuses a client certificate setting it cannot use, exit 2 naming the setting, before any request', () => {
  // Port 9: nothing listens, so an attempted request would exit 1, not 2.
  const env = { KILLSWITCH_URL: 'https://127.0.0.1:9', KILLSWITCH_OPERATOR_KEY: 'ksop_unused', LOG_LEVEL: 'warn' };

  it.each([
    ['a certificate without its key', { KILLSWITCH_CLIENT_CERT_FILE: 'CERT' }, 'killswitch: KILLSWITCH_CLIENT_KEY_FILE is not set: a client certificate for mutual TLS needs both'],
    ['a key without its certificate', { KILLSWITCH_CLIENT_KEY_FILE: 'KEY' }, 'killswitch: KILLSWITCH_CLIENT_CERT_FILE is not set'],
    ['a key of another certificate', { KILLSWITCH_CLIENT_CERT_FILE: 'CERT', KILLSWITCH_CLIENT_KEY_FILE: 'OTHER_KEY' }, 'not the private key of the certificate in KILLSWITCH_CLIENT_CERT_FILE'],
    ['a file that cannot be read', { KILLSWITCH_CLIENT_CERT_FILE: 'MISSING', KILLSWITCH_CLIENT_KEY_FILE: 'KEY' }, 'cannot read the file (ENOENT: no such file)'],
    ['a plain http:// KILLSWITCH_URL', { KILLSWITCH_URL: 'http://127.0.0.1:9', KILLSWITCH_CLIENT_CERT_FILE: 'CERT', KILLSWITCH_CLIENT_KEY_FILE: 'KEY' }, 'KILLSWITCH_CLIENT_CERT_FILE is set but KILLSWITCH_URL is http://127.0.0.1:9: a client certificate is only presented over https://'],
  ])('%s', async (_what, settings, message) => {
    const files: Record<string, string> = { CERT: pki.clientCert, KEY: pki.clientKey, OTHER_KEY: pki.otherClientKey, MISSING: `${pki.dir}/missing.pem` };
    const resolved = Object.fromEntries(Object.entries(settings).map(([k, v]) => [k, files[v] ?? v]));
    const r = await killswitch(['kills'], { env: { ...env, ...resolved } });
    expect(r.code, r.stderr).toBe(2);
    expect(r.stderr).toContain(message);
    expect(r.stderr).not.toContain('cannot reach');
  });
});

describe('killswitch start and config check refuse a TLS configuration that cannot serve, exit 2 naming the setting', () => {
  // Nothing listens on port 9 and no Unleash is started: the refusal comes before anything connects.
  const nowhere = { DATABASE_URL: 'postgres://nobody@127.0.0.1:9/none', REDIS_URL: 'redis://127.0.0.1:9', UNLEASH_URL: 'http://127.0.0.1:9/api', POLICY_FILE: POLICY };

  it('a certificate without its key', async () => {
    for (const command of [['config', 'check'], ['start']]) {
      const r = await killswitch(command, { env: { ...nowhere, TLS_CERT_FILE: pki.serverCert, TLS_KEY_FILE: '' } });
      expect(r.code, command.join(' ')).toBe(2);
      expect(r.stderr).toContain('killswitch: configuration error: TLS_CERT_FILE is set but TLS_KEY_FILE is not');
    }
  });

  it('a file that cannot be read, named with its path', async () => {
    const missing = `${pki.dir}/missing.pem`;
    for (const command of [['config', 'check'], ['start']]) {
      const r = await killswitch(command, { env: { ...nowhere, TLS_CERT_FILE: pki.serverCert, TLS_KEY_FILE: pki.serverKey, TLS_CLIENT_CA_FILE: missing } });
      expect(r.code, command.join(' ')).toBe(2);
      expect(r.stderr).toContain(`killswitch: configuration error: TLS_CLIENT_CA_FILE=${missing}: cannot read the file (ENOENT: no such file)`);
    }
  });
});
