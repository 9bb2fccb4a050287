import { createServer, type IncomingMessage, request, type Server } from 'node:http';
import { type AddressInfo, connect } from 'node:net';
import type { Duplex } from 'node:stream';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { UnleashAdmin } from '../../src/flags/admin-client.js';
import { outboundDispatcher } from '../../src/http/outbound.js';
import { TestContext } from '../helpers/context.js';
import { until } from '../helpers/unleash.js';

// A network whose only way out is a proxy (docs/operations.md, "An outbound proxy in the environment"):
// the alert webhook and the flags sync's admin API calls go through HTTP_PROXY / HTTPS_PROXY unless
// NO_PROXY names the host; a loopback one is reached directly. The proxy here is a real forward proxy on a local port that sends every
// request it is asked for (a CONNECT tunnel, or an absolute-form request) to the receiver, whatever host it names: the
// receiver's name (alerts.proxied.test) resolves nowhere, so only a delivery through the proxy arrives.

const t = new TestContext();
const unleash = inject('unleash');
const MISSING = 'no.such.flag.proxy-test';
const bodies: string[] = [];
const proxied: string[] = [];
let receiverPort = 0;
let proxyUrl = '';
const servers: Server[] = [];

async function listen(server: Server): Promise<number> {
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return (server.address() as AddressInfo).port;
}

beforeAll(async () => {
  await t.setup();
  receiverPort = await listen(
    createServer((req, res) => {
      let body = '';
      req.on('data', (c: Buffer) => (body += c.toString('utf8')));
      req.on('end', () => {
        bodies.push(body);
        res.writeHead(200).end('ok');
      });
    }),
  );
  const proxy = createServer((req, res) => {
    proxied.push(req.url ?? '');
    const target = new URL(req.url ?? '/');
    const upstream = request({ host: '127.0.0.1', port: receiverPort, method: req.method, path: target.pathname + target.search, headers: req.headers }, (up) => {
      res.writeHead(up.statusCode ?? 502, up.headers);
      up.pipe(res);
    });
    upstream.on('error', () => res.writeHead(502).end());
    req.pipe(upstream);
  });
  // A tunnel (CONNECT host:port), as undici asks any proxy for, http and https alike: to that port here.
  proxy.on('connect', (req: IncomingMessage, client: Duplex, head: Buffer) => {
    proxied.push(`CONNECT ${req.url}`);
    const upstream = connect(Number(/:(\d+)$/.exec(req.url ?? '')?.[1]), '127.0.0.1', () => {
      client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      upstream.write(head);
      upstream.pipe(client);
      client.pipe(upstream);
    });
    upstream.on('error', () => client.destroy());
    client.on('error', () => upstream.destroy());
  });
  const proxyPort = await listen(proxy);
  proxyUrl = `http://127.0.0.1:${proxyPort}`;
});

afterAll(async () => {
  for (const s of servers) s.close();
  await t.teardown();
});

async function raiseOn(app: FastifyInstance, message: string): Promise<void> {
  await app.ctx.alerts.raise({ kind: 'KILL_CREATED', message });
}

describe('the alert webhook with HTTP_PROXY set', () => {
  it('goes through the proxy to a host only the proxy can reach', { timeout: 30_000 }, async () => {
    const app = await t.app({ alertWebhookUrl: `http://alerts.proxied.test:${receiverPort}/hook`, httpProxy: proxyUrl });
    await raiseOn(app, 'through the proxy');
    await until(() => bodies.some((b) => b.includes('through the proxy')), 10_000, 'the alert at the receiver');
    expect(proxied).toEqual([`CONNECT alerts.proxied.test:${receiverPort}`]);
  });

  it('reaches a loopback receiver directly, and a host NO_PROXY names is not sent to the proxy', { timeout: 30_000 }, async () => {
    proxied.length = 0;
    const direct = await t.app({ alertWebhookUrl: `http://127.0.0.1:${receiverPort}/hook`, httpProxy: proxyUrl });
    await raiseOn(direct, 'loopback, directly');
    await until(() => bodies.some((b) => b.includes('loopback, directly')), 10_000, 'the alert at the receiver');
    const excluded = await t.app({ alertWebhookUrl: `http://alerts.proxied.test:${receiverPort}/hook`, httpProxy: proxyUrl, noProxy: '.proxied.test', alertWebhookAttempts: 1 });
    const alert = await excluded.ctx.alerts.raise({ kind: 'KILL_CREATED', message: 'not through the proxy' });
    // Straight to DNS, which knows no alerts.proxied.test: the one attempt fails.
    await until(() => t.logs.lines.some((l) => l.includes('alert webhook delivery failed') && l.includes(alert.id)), 10_000, 'the failed delivery in the log');
    expect(proxied).toEqual([]);
    expect(bodies.some((b) => b.includes('not through the proxy'))).toBe(false);
  });
});

describe("the flags sync's Unleash admin client with HTTP_PROXY set", () => {
  it('reaches an Unleash on another host through the proxy, as the flag polls do', { timeout: 30_000 }, async () => {
    proxied.length = 0;
    const port = new URL(unleash.apiUrl).port;
    const admin = new UnleashAdmin(`http://unleash.proxied.test:${port}/api`, unleash.adminToken, 5_000, outboundDispatcher({ httpProxy: proxyUrl, httpsProxy: '', noProxy: '' }));
    expect((await admin.getFeature(MISSING))?.name).toBeUndefined();
    expect((await admin.archivedFeatureNames()).has(MISSING)).toBe(false);
    expect(new Set(proxied)).toEqual(new Set([`CONNECT unleash.proxied.test:${port}`]));
  });
});
