import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Alert } from '../../src/alerts/store.js';
import { AlertWebhook, alertUiLink, signBody, type WebhookSettings } from '../../src/alerts/webhook.js';
import { loadConfig } from '../../src/config.js';
import { bearer, LogCapture, TestContext } from '../helpers/context.js';

// A real HTTP receiver on a local port: each request gets the next scripted reply (the last repeats).
interface Reply {
  status: number;
  delayMs?: number;
  // The reply is held until this settles (after delayMs): the test decides when the receiver answers.
  hold?: Promise<unknown>;
  headers?: Record<string, string>;
}
interface Received {
  headers: IncomingHttpHeaders;
  body: string;
}

class Receiver {
  readonly received: Received[] = [];
  answered = 0;
  private server: Server | undefined;
  script: Reply[] = [{ status: 200 }];
  url = '';

  async start(): Promise<this> {
    this.server = createServer((req, res) => {
      let body = '';
      req.on('data', (c: Buffer) => {
        body += c.toString('utf8');
      });
      req.on('end', () => {
        this.received.push({ headers: req.headers, body });
        const reply = this.script[Math.min(this.received.length - 1, this.script.length - 1)]!;
        setTimeout(async () => {
          await reply.hold;
          if (res.destroyed) return;
          this.answered++;
          res.writeHead(reply.status, { 'content-type': 'text/plain', ...reply.headers });
          res.end(reply.status < 300 ? 'ok' : 'receiver error');
        }, reply.delayMs ?? 0);
      });
    });
    await new Promise<void>((r) => this.server!.listen(0, '127.0.0.1', r));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/hook`;
    return this;
  }

  reset(script: Reply[]): void {
    this.received.length = 0;
    this.answered = 0;
    this.script = script;
  }

  async waitFor(n: number, ms = 5_000): Promise<Received[]> {
    const deadline = Date.now() + ms;
    while (this.received.length < n) {
      if (Date.now() > deadline) throw new Error(`receiver got ${this.received.length} of ${n} requests`);
      await new Promise((r) => setTimeout(r, 10));
    }
    return this.received;
  }

  async stop(): Promise<void> {
    this.server?.closeAllConnections();
    await new Promise((r) => this.server?.close(r));
  }
}

function sampleAlert(over: Partial<Alert> = {}): Alert {
  return {
    id: '0190e3c1-0000-7000-8000-0000000000aa',
    kind: 'SESSION_HALTED',
    severity: 'critical',
    token_id: 'tok-1',
    project_id: 'p1',
    session_id: 's-1',
    server: 'filesystem',
    numbers: { used: 200, max: 200 },
    details: { trigger: 'SESSION_LIMIT' },
    message: 'Session s-1 halted: 200/200 calls <limit> & more',
    created_at: new Date('2025-01-02T03:04:05.000Z'),
    acknowledged_at: null,
    acknowledged_by: null,
    ack_note: null,
    ...over,
  };
}

describe('alert webhook against a real HTTP receiver', () => {
  const receiver = new Receiver();
  const logs = new LogCapture();
  const log = pino({ level: 'debug' }, logs);
  const settings = (over: Partial<WebhookSettings> = {}): WebhookSettings => ({
    url: receiver.url,
    format: 'generic',
    attempts: 3,
    timeoutMs: 1_000,
    backoffMs: 50,
    minSeverity: 'info',
    secret: undefined,
    publicUrl: 'http://killswitch.test:8080',
    ...over,
  });

  beforeAll(() => receiver.start());
  afterAll(() => receiver.stop());

  it('generic: JSON body with the whole alert, alert-id header and a verifiable signature', async () => {
    receiver.reset([{ status: 204 }]);
    const hook = new AlertWebhook(settings({ secret: 'hook-secret' }), log);
    const result = await hook.send(sampleAlert());
    expect(result).toEqual({ ok: true, attempts: 1, status: 204 });
    const [req] = await receiver.waitFor(1);
    expect(req!.headers['content-type']).toBe('application/json');
    expect(req!.headers['x-killswitch-alert-id']).toBe('0190e3c1-0000-7000-8000-0000000000aa');
    const ts = req!.headers['x-killswitch-timestamp'] as string;
    expect(req!.headers['x-killswitch-signature']).toBe(signBody('hook-secret', ts, req!.body));
    expect(JSON.parse(req!.body)).toEqual({
      source: 'mcp-killswitch',
      event: 'alert.raised',
      link: 'http://killswitch.test:8080/v1/alerts/0190e3c1-0000-7000-8000-0000000000aa',
      ui_link: 'http://killswitch.test:8080/ui/#/timeline?from=2025-01-02T03%3A03%3A05.000Z&target=session%3As-1',
      alert: {
        id: '0190e3c1-0000-7000-8000-0000000000aa',
        kind: 'SESSION_HALTED',
        severity: 'critical',
        token_id: 'tok-1',
        project_id: 'p1',
        session_id: 's-1',
        server: 'filesystem',
        numbers: { used: 200, max: 200 },
        details: { trigger: 'SESSION_LIMIT' },
        message: 'Session s-1 halted: 200/200 calls <limit> & more',
        created_at: '2025-01-02T03:04:05.000Z',
        acknowledged_at: null,
        acknowledged_by: null,
        ack_note: null,
      },
    });
    await hook.stop();
  });

  it('slack: {text, blocks} with escaped mrkdwn, fields and a link', async () => {
    receiver.reset([{ status: 200 }]);
    const hook = new AlertWebhook(settings({ format: 'slack', secret: 'ignored-for-slack' }), log);
    expect((await hook.send(sampleAlert())).ok).toBe(true);
    const [req] = await receiver.waitFor(1);
    expect(req!.headers['x-killswitch-signature']).toBeUndefined();
    const body = JSON.parse(req!.body);
    expect(Object.keys(body).sort()).toEqual(['blocks', 'text']);
    expect(body.text).toBe(':rotating_light: [CRITICAL] SESSION_HALTED: Session s-1 halted: 200/200 calls &lt;limit&gt; &amp; more');
    expect(body.blocks[0]).toEqual({ type: 'header', text: { type: 'plain_text', text: 'SESSION_HALTED (critical)' } });
    expect(body.blocks[1].text.type).toBe('mrkdwn');
    const fields = body.blocks[2].fields.map((f: { text: string }) => f.text);
    expect(fields).toEqual(['*Server*\nfilesystem', '*Token*\ntok-1', '*Session*\ns-1', '*Project*\np1', '*Numbers*\nused: 200, max: 200']);
    // A person clicks it: the admin UI's timeline of the session from a minute before, not the API (401 in a browser).
    expect(body.blocks[3].elements[0].text).toContain('<http://killswitch.test:8080/ui/#/timeline?from=2025-01-02T03%3A03%3A05.000Z&amp;target=session%3As-1|open in the admin UI>');
    await hook.stop();
  });

  it('the admin UI link: the timeline of the session, else the token, else the server; the alerts page when the alert names none', () => {
    const url = 'https://ks.example.com/';
    expect(alertUiLink(sampleAlert(), '')).toBeUndefined();
    expect(alertUiLink(sampleAlert({ session_id: null }), url)).toBe('https://ks.example.com/ui/#/timeline?from=2025-01-02T03%3A03%3A05.000Z&target=token%3Atok-1');
    expect(alertUiLink(sampleAlert({ session_id: null, token_id: null }), url)).toBe('https://ks.example.com/ui/#/timeline?from=2025-01-02T03%3A03%3A05.000Z&target=server%3Afilesystem');
    expect(alertUiLink(sampleAlert({ session_id: null, token_id: null, server: null }), url)).toBe('https://ks.example.com/ui/#/alerts');
  });

  it('retries a failing receiver with backoff until it succeeds', async () => {
    receiver.reset([{ status: 503 }, { status: 500 }, { status: 200 }]);
    const hook = new AlertWebhook(settings({ backoffMs: 100 }), log);
    // The waits it asks for between attempts (still waited): exponential, 100 ms then 200 ms.
    const waits: number[] = [];
    const internals = hook as unknown as { sleep: (ms: number) => Promise<void> };
    const sleep = internals.sleep.bind(hook);
    internals.sleep = (ms: number) => {
      waits.push(ms);
      return sleep(ms);
    };
    const result = await hook.send(sampleAlert({ id: '0190e3c1-0000-7000-8000-0000000000ab' }));
    expect(result).toEqual({ ok: true, attempts: 3, status: 200 });
    const got = await receiver.waitFor(3);
    expect(got).toHaveLength(3);
    expect(waits).toEqual([100, 200]);
    expect(new Set(got.map((r) => r.headers['x-killswitch-alert-id']))).toEqual(new Set(['0190e3c1-0000-7000-8000-0000000000ab']));
    expect(logs.text).toContain('alert webhook attempt failed; retrying');
    await hook.stop();
  });

  it('gives up after the configured attempts and logs the failure; a 4xx is not retried', async () => {
    receiver.reset([{ status: 500 }]);
    const hook = new AlertWebhook(settings({ attempts: 3, backoffMs: 10 }), log);
    const failed = await hook.send(sampleAlert({ id: '0190e3c1-0000-7000-8000-0000000000ac' }));
    expect(failed).toMatchObject({ ok: false, attempts: 3, status: 500 });
    expect(receiver.received).toHaveLength(3);
    const line = logs.lines.map((l) => JSON.parse(l)).find((l) => l.msg === 'alert webhook delivery failed' && l.alert_id === '0190e3c1-0000-7000-8000-0000000000ac');
    expect(line).toMatchObject({ level: 50, attempts: 3, status: 500 });

    receiver.reset([{ status: 400 }]);
    const rejected = await hook.send(sampleAlert());
    expect(rejected).toMatchObject({ ok: false, attempts: 1, status: 400 });
    expect(receiver.received).toHaveLength(1);
    await hook.stop();
  });

  it('a failed delivery is logged and returned without the URL when fetch quotes it (a URL with a password, or one it cannot parse)', async () => {
    for (const url of [receiver.url.replace('http://', 'http://user:planted-hook-secret@'), `${receiver.url.replace('127.0.0.1', '[127.0.0.1')}/planted-hook-secret`]) {
      const hook = new AlertWebhook(settings({ url, attempts: 2, backoffMs: 1 }), log);
      const failed = await hook.send(sampleAlert({ id: '0190e3c1-0000-7000-8000-0000000000ad' }));
      await hook.stop();
      // fetch refused it (else this test proves nothing), and said why without the URL.
      expect(failed).toMatchObject({ ok: false, attempts: 2, error: expect.stringContaining('ALERT_WEBHOOK_URL (hidden)') });
      expect(JSON.stringify(failed)).not.toContain('planted-hook-secret');
    }
    expect(logs.lines.filter((l) => l.includes('0190e3c1-0000-7000-8000-0000000000ad'))).toHaveLength(4);
    expect(logs.text).not.toContain('planted-hook-secret');
  });

  it('times out a hanging receiver and retries', async () => {
    receiver.reset([{ status: 200, delayMs: 2_000 }, { status: 200 }]);
    const hook = new AlertWebhook(settings({ timeoutMs: 200, backoffMs: 10 }), log);
    const result = await hook.send(sampleAlert());
    // A 200 on the second attempt: the first (answered 200 only after 2 s) was given up at 200 ms and retried.
    expect(result).toEqual({ ok: true, attempts: 2, status: 200 });
    await hook.stop();
  });

  it('skips alerts below the minimum severity', async () => {
    receiver.reset([{ status: 200 }]);
    const hook = new AlertWebhook(settings({ minSeverity: 'critical' }), log);
    hook.deliver(sampleAlert({ severity: 'warning' }));
    hook.deliver(sampleAlert({ severity: 'critical', id: '0190e3c1-0000-7000-8000-0000000000ad' }));
    const got = await receiver.waitFor(1);
    await new Promise((r) => setTimeout(r, 100));
    expect(got).toHaveLength(1);
    expect(got[0]!.headers['x-killswitch-alert-id']).toBe('0190e3c1-0000-7000-8000-0000000000ad');
    await hook.stop();
  });

  it('does not follow a redirect: a 307 to another server is a failed delivery and that server gets nothing', async () => {
    const internal = await new Receiver().start();
    try {
      receiver.reset([{ status: 307, headers: { location: internal.url } }]);
      const hook = new AlertWebhook(settings({ secret: 'hook-secret', backoffMs: 10 }), log);
      const result = await hook.send(sampleAlert({ id: '0190e3c1-0000-7000-8000-0000000000b1' }));
      expect(result).toMatchObject({ ok: false, attempts: 1, status: 307 });
      expect(receiver.received).toHaveLength(1);
      await new Promise((r) => setTimeout(r, 200));
      expect(internal.received).toHaveLength(0);
      const line = logs.lines.map((l) => JSON.parse(l)).find((l) => l.msg === 'alert webhook delivery failed' && l.alert_id === '0190e3c1-0000-7000-8000-0000000000b1');
      expect(line).toMatchObject({ level: 50, status: 307 });
      expect(line.error).toMatch(/redirect/);
      await hook.stop();
    } finally {
      await internal.stop();
    }
  });

  it('a full queue drops the least severe, oldest alert (or a less severe newcomer), keeps arrival order, counts and warns once', async () => {
    // Four slow deliveries occupy every worker; the queue holds three.
    receiver.reset([{ status: 200, delayMs: 300 }]);
    const hook = new AlertWebhook(settings({ maxQueued: 3 }), log);
    try {
      const id = (n: number) => `0190e3c1-0000-7000-8000-0000000001${String(n).padStart(2, '0')}`;
      for (let n = 1; n <= 4; n++) hook.deliver(sampleAlert({ id: id(n), kind: 'KILL_SWITCH', severity: 'warning' }));
      const incoming: Array<[number, Alert['severity']]> = [
        [10, 'info'], // queued
        [11, 'warning'], // queued
        [12, 'info'], // queued: full
        [13, 'critical'], // drops 10 (oldest info)
        [14, 'info'], // drops 12 (oldest info)
        [15, 'critical'], // drops 14
        [16, 'info'], // less severe than everything queued (warning, critical, critical): dropped itself
        [17, 'critical'], // drops 11 (the warning)
      ];
      const warningsBefore = logs.lines.filter((l) => l.includes('alert webhook queue full')).length;
      for (const [n, severity] of incoming) hook.deliver(sampleAlert({ id: id(n), kind: severity === 'critical' ? 'SESSION_HALTED' : 'KILL_SWITCH', severity }));

      const got = await receiver.waitFor(7);
      await new Promise((r) => setTimeout(r, 400));
      const ids = got.map((r) => r.headers['x-killswitch-alert-id'] as string);
      expect(ids).toHaveLength(7);
      // The first four went out before the queue filled; the three survivors leave it together (three free workers).
      expect(ids.slice(0, 4).sort()).toEqual([1, 2, 3, 4].map(id));
      expect(ids.slice(4).sort()).toEqual([13, 15, 17].map(id));
      expect(hook.droppedCounts()).toEqual({ info: 4, warning: 1, critical: 0 });
      const warnings = logs.lines.filter((l) => l.includes('alert webhook queue full')).slice(warningsBefore);
      expect(warnings).toHaveLength(1);
      expect(JSON.parse(warnings[0]!)).toMatchObject({ level: 40, dropped: 1 });
    } finally {
      // Stops what is still queued or in flight (it would reach the next test's receiver).
      await hook.stop();
    }
  });

  it('rejects a malformed ALERT_WEBHOOK_URL at start without printing it', () => {
    expect(() => loadConfig({ ALERT_WEBHOOK_URL: 'hooks.slack.com/services/SECRET' })).toThrow(/ALERT_WEBHOOK_URL=\(hidden\) is invalid/);
    expect(() => loadConfig({ ALERT_WEBHOOK_URL: 'hooks.slack.com/services/SECRET' })).not.toThrow(/SECRET/);
    // fetch cannot use these, and its error quotes the whole URL.
    for (const url of ['https://user:SECRET@hooks.example/x', 'https://:SECRET@hooks.example/x', 'http://[bad/hooks/SECRET']) {
      expect(() => loadConfig({ ALERT_WEBHOOK_URL: url }), url).toThrow(/ALERT_WEBHOOK_URL=\(hidden\) is invalid/);
      expect(() => loadConfig({ ALERT_WEBHOOK_URL: url }), url).not.toThrow(/SECRET/);
    }
    expect(() => loadConfig({ ALERT_WEBHOOK_FORMAT: 'teams' })).toThrow(/ALERT_WEBHOOK_FORMAT/);
    expect(loadConfig({ ALERT_WEBHOOK_URL: 'https://hooks.example/x', ALERT_WEBHOOK_FORMAT: 'slack' })).toMatchObject({ alertWebhookFormat: 'slack', alertWebhookAttempts: 3 });
  });

  describe('through the control plane', () => {
    const t = new TestContext();
    beforeAll(() => t.setup());
    afterAll(() => t.teardown());

    it('raise returns before a slow, failing-then-succeeding receiver is done, and the alert arrives', async () => {
      // The receiver holds its first answer (a 502) until the test releases it: raise must settle while it is held.
      let release!: () => void;
      const held = new Promise<void>((r) => {
        release = r;
      });
      receiver.reset([{ status: 502, hold: held }, { status: 200 }]);
      const app = await t.app({ alertWebhookUrl: receiver.url, alertWebhookFormat: 'slack', alertWebhookBackoffMs: 50, alertWebhookTimeoutMs: 30_000 });
      let raised: Alert | undefined;
      const raising = app.ctx.alerts.raise({ kind: 'CASCADE_WRITE', message: '3 writes to 3 files in the last 5 calls', token_id: 'tok-c', numbers: { writes: 3, window: 5 } });
      void raising.then((a) => {
        raised = a;
      });
      await receiver.waitFor(1, 10_000);
      const deadline = Date.now() + 10_000;
      while (raised === undefined && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
      expect(raised, 'raise() settled while the receiver still held its answer').toBeDefined();
      expect(receiver.answered).toBe(0);
      release();
      const alert = await raising;
      const got = await receiver.waitFor(2, 10_000);
      expect(got.map((r) => r.headers['x-killswitch-alert-id'])).toEqual([alert.id, alert.id]);
      const body = JSON.parse(got[1]!.body);
      expect(body.text).toContain('CASCADE_WRITE');
      expect(body.blocks[2].fields).toContainEqual({ type: 'mrkdwn', text: '*Numbers*\nwrites: 3, window: 5' });
    });

    it('only the raising replica calls the webhook', async () => {
      receiver.reset([{ status: 200 }]);
      const cfg = { alertWebhookUrl: receiver.url, alertWebhookBackoffMs: 10 };
      const one = await t.app(cfg);
      await t.app(cfg);
      await t.app(cfg);
      const alert = await one.ctx.alerts.raise({ kind: 'KILL_CREATED', message: 'kill server filesystem' });
      await receiver.waitFor(1);
      await new Promise((r) => setTimeout(r, 300));
      expect(receiver.received.map((r) => r.headers['x-killswitch-alert-id'])).toEqual([alert.id]);
      expect(JSON.parse(receiver.received[0]!.body).alert.kind).toBe('KILL_CREATED');
    });

    it('GET /metrics counts the alerts a full webhook queue dropped, by severity', async () => {
      // Every worker hangs on the receiver; 1,000 more wait; the rest push out the oldest of them.
      receiver.reset([{ status: 200, delayMs: 10_000 }]);
      const app = await t.app({ alertWebhookUrl: receiver.url, alertWebhookTimeoutMs: 10_000, alertWebhookAttempts: 1 });
      const viewer = await t.operatorKey(app, 'viewer');
      for (let i = 0; i < 1_010; i += 101) {
        await Promise.all(Array.from({ length: 101 }, () => app.ctx.alerts.raise({ kind: 'RATE_LIMITED', severity: 'info', message: 'flood', server: 'metrics-flood' })));
      }
      const res = await app.inject({ url: '/metrics', headers: bearer(viewer) });
      expect(res.statusCode, res.body).toBe(200);
      expect(res.body).toContain('# TYPE killswitch_alert_webhook_dropped_total counter');
      expect(res.body).toMatch(/^killswitch_alert_webhook_dropped_total\{severity="info"\} 6$/m);
      expect(res.body).toMatch(/^killswitch_alert_webhook_dropped_total\{severity="critical"\} 0$/m);
      expect(t.logs.text).toContain('alert webhook queue full');
    });
  });
});
