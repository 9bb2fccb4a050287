import { execFile } from 'node:child_process';
import { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import { afterAll, afterEach, describe, expect, inject, it } from 'vitest';
import { type Config, loadConfig } from '../../src/config.js';
import type { UnleashAddon } from '../../src/flags/admin-client.js';
import { describeRegistration, registrationKeys } from '../../src/flags/registration.js';
import { FLAGS_DIR, prepareUnleash, syncFromConfig } from '../../src/flags/setup.js';
import { describeSyncReport, MANAGED_TITLE, registeredWebhook, secretFingerprint } from '../../src/flags/sync.js';
import { LogCapture, TestContext } from '../helpers/context.js';
import { TEST_REDIS_URL } from '../helpers/env.js';
import { restoreFlag, testAdmin, testPolicyNames, until } from '../helpers/unleash.js';

// `flags sync` against the run's real unleash-server: idempotent, never loosens what an operator did,
// never moves the control plane's webhook unless told to.

const unleash = inject('unleash');
const admin = testAdmin(unleash);
const env = unleash.environment;
const config = loadConfig({}, { unleashUrl: unleash.apiUrl, unleashAdminToken: unleash.adminToken, unleashEnvironment: env, unleashWebhookSecret: unleash.webhookSecret });
const webhookUrl = `http://127.0.0.1:${unleash.webhookPort}/v1/flags/events`;
const touched = new Set<string>();
const tmpDirs: string[] = [];

const run = promisify(execFile);

async function sync(flagsDir = FLAGS_DIR, cfg: Config = config, url = webhookUrl, webhookMode: 'own' | 'keep' = 'own') {
  return syncFromConfig(cfg, { names: await testPolicyNames(), flagsDir, webhookUrl: url, webhookMode });
}

/**
 * Archives a flag and deletes it from the archive once Unleash has recorded the archive in the flag's
 * lifecycle: unleash-server 7.5.1 writes that stage after answering, and a delete in between makes its
 * insert fail on the foreign key (logged by Unleash; once, in one run, Unleash went down at that point).
 */
async function archiveAndDelete(name: string): Promise<void> {
  await admin.archiveFeature(name);
  const url = `${unleash.apiUrl}/admin/projects/default/features/${encodeURIComponent(name)}/lifecycle`;
  await until(
    async () => {
      const res = await fetch(url, { headers: { authorization: unleash.adminToken } });
      const stages = res.ok ? ((await res.json()) as Array<{ stage: string }>) : [];
      return stages.some((s) => s.stage === 'archived');
    },
    10_000,
    `the archive of ${name} in its lifecycle`,
    50,
  );
  await admin.deleteArchivedFeature(name);
}

const isOurs = (a: UnleashAddon) => a.provider === 'webhook' && (a.description ?? '').startsWith('killswitch control plane:');
async function ourWebhooks() {
  return (await admin.listAddons()).filter(isOurs).map(registeredWebhook);
}

/**
 * Deletes webhooks of ours. unleash-server 7.5.1 exits when an integration is deleted while it delivers an
 * event, so the deliveries of earlier flag changes (restoreFlag) are given time to finish first.
 */
async function deleteWebhooks(which: (w: { url: string | null; enabled: boolean }) => boolean) {
  const doomed = (await ourWebhooks()).filter(which);
  if (doomed.length === 0) return;
  await new Promise((r) => setTimeout(r, 2_000));
  for (const w of doomed) await admin.deleteAddon(w.id);
}

/** Where the shell's `flags sync` records the webhook registration (not the default prefix of a developer's Redis). */
const SHELL_REDIS_PREFIX = `kst:flags-sync-${process.pid}:`;
const registrationKeysOfShell = registrationKeys(SHELL_REDIS_PREFIX);

/** `killswitch flags sync` from an operator's shell that lacks the control plane's PORT, HOST and PUBLIC_URL. */
async function cliFromBareShell(args: string[] = [], extraEnv: Record<string, string> = {}) {
  const { PORT: _p, HOST: _h, PUBLIC_URL: _u, ...rest } = process.env;
  const shellEnv = {
    ...rest,
    UNLEASH_URL: unleash.apiUrl,
    UNLEASH_ADMIN_TOKEN: unleash.adminToken,
    UNLEASH_ENVIRONMENT: env,
    UNLEASH_WEBHOOK_SECRET: unleash.webhookSecret,
    REDIS_URL: TEST_REDIS_URL,
    REDIS_PREFIX: SHELL_REDIS_PREFIX,
    LOG_LEVEL: 'warn',
    ...extraEnv,
  };
  try {
    const { stdout, stderr } = await run('node', ['bin/killswitch.js', 'flags', 'sync', ...args], { env: shellEnv, timeout: 60_000 });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

/** Listens where the control plane's webhook points and records what Unleash posts there. */
async function receiver(): Promise<{ posts: Array<{ headers: IncomingHttpHeaders; body: { type?: string; featureName?: string } }>; server: Server }> {
  const posts: Array<{ headers: IncomingHttpHeaders; body: { type?: string; featureName?: string } }> = [];
  const server = createServer((req, res) => {
    let body = '';
    req.on('data', (c: Buffer) => {
      body += c.toString('utf8');
    });
    req.on('end', () => {
      posts.push({ headers: req.headers, body: JSON.parse(body || '{}') });
      res.writeHead(200, { 'content-type': 'application/json' }).end('{"result":"ignored"}');
    });
  });
  await new Promise<void>((r) => server.listen(unleash.webhookPort, '127.0.0.1', r));
  servers.push(server);
  return { posts, server };
}
const servers: Server[] = [];

afterEach(async () => {
  for (const server of servers.splice(0)) await new Promise((r) => server.close(r));
  for (const flag of touched) await restoreFlag(unleash, flag);
  touched.clear();
  // Whatever a test did to the webhooks, the run's one points at the test port again (the control plane's sync at start).
  await deleteWebhooks((w) => w.url !== webhookUrl);
  await sync();
});

afterAll(async () => {
  for (const d of tmpDirs) await rm(d, { recursive: true, force: true });
  await redis.del(registrationKeysOfShell.last, registrationKeysOfShell.ok);
  redis.disconnect();
});

const redis = new Redis(TEST_REDIS_URL);
/** The registration the shell's flags sync recorded, as a control plane at webhookUrl with the run's secret reads it. */
async function shellRegistration() {
  const raw = (await redis.mget(registrationKeysOfShell.last, registrationKeysOfShell.ok)) as [string | null, string | null];
  return describeRegistration(raw, { url: webhookUrl, secret: unleash.webhookSecret });
}

describe('flags sync (real unleash-server)', () => {
  it('is idempotent: a second run finds every flag unchanged, one webhook, the context fields with their values', async () => {
    await sync();
    const report = await sync();
    expect(report.created).toEqual([]);
    expect(report.updated).toEqual([]);
    expect(report.drifted).toEqual([]);
    expect(report.unchanged).toContain('mcp.enabled');
    expect(report.unchanged).toContain('mcp.filesystem.write');
    expect(report.webhook).toMatchObject({ result: 'updated', rewritten: true, url: webhookUrl, others: [] });
    expect(await ourWebhooks()).toMatchObject([{ url: webhookUrl, secret: secretFingerprint(unleash.webhookSecret), enabled: true }]);
    const fields = new Map((await admin.listContextFields()).map((f) => [f.name, f]));
    expect(fields.get('tokenType')?.legalValues?.map((v) => v.value)).toEqual(['admin', 'ro', 'rw']);
    expect(fields.get('mcpEnvironment')?.legalValues?.map((v) => v.value)).toEqual(['development', 'production', 'staging']);
    expect(fields.get('server')?.legalValues?.map((v) => v.value)).toEqual(expect.arrayContaining(['filesystem', 'postgres', 'github']));
    for (const name of ['role', 'projectId', 'tool', 'capability']) expect(fields.has(name)).toBe(true);
    const strategies = await admin.getStrategies('mcp.enabled', env);
    expect(strategies).toHaveLength(1);
    expect(strategies[0]?.title).toMatch(MANAGED_TITLE);
  });

  it('never turns an operator-disabled flag back on, and reports it', async () => {
    touched.add('mcp.everything.read');
    await admin.setEnabled('mcp.everything.read', env, false);
    const report = await sync();
    expect(report.off).toContain('mcp.everything.read');
    const f = await admin.getFeature('mcp.everything.read');
    expect(f?.environments.find((e) => e.name === env)?.enabled).toBe(false);
  });

  it('does not revive an archived flag', async () => {
    touched.add('mcp.everything.delete');
    await admin.archiveFeature('mcp.everything.delete');
    const report = await sync();
    expect(report.archived).toContain('mcp.everything.delete');
    expect(await admin.getFeature('mcp.everything.delete')).toBeUndefined();
  });

  it('an archived flag revived in Unleash stays off: sync never turns it on', async () => {
    touched.add('mcp.everything.delete');
    await admin.archiveFeature('mcp.everything.delete');
    expect((await sync()).archived).toContain('mcp.everything.delete');
    await admin.reviveFeature('mcp.everything.delete');
    const report = await sync();
    expect(report.off).toContain('mcp.everything.delete');
    expect(report.created).not.toContain('mcp.everything.delete');
    expect((await admin.getFeature('mcp.everything.delete'))?.environments.find((e) => e.name === env)?.enabled).toBe(false);
  });

  it('a flag deleted in Unleash is recreated OFF (it existed before), never ON; one Unleash never had is created ON', async () => {
    const name = 'mcp.everything.delete';
    touched.add(name);
    await archiveAndDelete(name);
    const report = await sync();
    expect(report.created).not.toContain(name);
    expect(report.recreatedOff).toEqual([name]);
    expect((await admin.getFeature(name))?.environments.find((e) => e.name === env)?.enabled).toBe(false);
    expect(describeSyncReport(report, env).join('\n')).toContain(`recreated off (it existed before: deleted or archived in Unleash); turn it on in Unleash when that is intended: ${name}`);
    expect((await sync()).off).toContain(name);

    const fresh = `mcp.synctest.first${process.pid}x${Date.now()}`;
    const names = await testPolicyNames();
    const first = await syncFromConfig(config, { names: { ...names, extraFlags: [...names.extraFlags, fresh] }, webhookUrl: null });
    try {
      expect(first.created).toEqual([fresh]);
      expect(first.recreatedOff).toEqual([]);
      expect((await admin.getFeature(fresh))?.environments.find((e) => e.name === env)?.enabled).toBe(true);
    } finally {
      await archiveAndDelete(fresh);
    }
  });

  it('a webhook whose URL was changed in the Unleash UI (description kept) is rewritten by the start sync', async () => {
    const [current] = await ourWebhooks();
    const addon = (await admin.listAddons()).find((a) => a.id === current!.id)!;
    await admin.updateAddon(addon.id, { ...addon, parameters: { ...addon.parameters, url: 'http://127.0.0.1:9/elsewhere' }, description: addon.description ?? '' });
    const report = await sync();
    expect(report.webhook).toMatchObject({ result: 'updated', rewritten: true, url: webhookUrl });
    expect(describeSyncReport(report, env)[0]).toMatch(/webhook rewritten$/);
    // Unleash masks the URL when read back: that it posts here again shows the rewrite.
    const { posts } = await receiver();
    touched.add('mcp.everything.read');
    await admin.setEnabled('mcp.everything.read', env, false);
    await until(() => posts.some((p) => p.body.featureName === 'mcp.everything.read'), 15_000, 'the flag event posted to the rewritten URL');
  }, 60_000);

  it('restores descriptions, but leaves strategies edited in Unleash alone (drift)', async () => {
    touched.add('mcp.everything.write');
    await admin.updateFeature('mcp.everything.write', { description: 'edited by hand' });
    const [s] = await admin.getStrategies('mcp.everything.write', env);
    await admin.updateStrategy('mcp.everything.write', env, s!.id!, { ...s!, constraints: [{ contextName: 'tokenType', operator: 'NOT_IN', values: ['rw'] }] });
    const report = await sync();
    expect(report.updated).toContain('mcp.everything.write');
    expect(report.drifted).toContain('mcp.everything.write');
    expect((await admin.getFeature('mcp.everything.write'))?.description).toBe('Write tools of the everything MCP server.');
    const [after] = await admin.getStrategies('mcp.everything.write', env);
    expect(after?.constraints).toMatchObject([{ contextName: 'tokenType', operator: 'NOT_IN', values: ['rw'] }]);
  });

  it('applies a changed strategy from the files to strategies nobody edited, and back', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'ks-flags-'));
    tmpDirs.push(dir);
    await cp(FLAGS_DIR, dir, { recursive: true });
    const file = join(dir, 'global.yaml');
    const text = await readFile(file, 'utf8');
    await writeFile(
      file,
      text.replace(
        '    description: Calls made with admin agent tokens (mcp_admin_).\n',
        '    description: Calls made with admin agent tokens (mcp_admin_).\n    strategies:\n      - constraints:\n          - contextName: mcpEnvironment\n            operator: NOT_IN\n            values: [production]\n',
      ),
    );
    touched.add('mcp.tokens.admin');
    const changed = await sync(dir);
    expect(changed.updated).toEqual(['mcp.tokens.admin']);
    const strategies = await admin.getStrategies('mcp.tokens.admin', env);
    expect(strategies).toHaveLength(1);
    expect(strategies[0]?.constraints).toMatchObject([{ contextName: 'mcpEnvironment', operator: 'NOT_IN', values: ['production'] }]);
    expect(strategies[0]?.title).toMatch(MANAGED_TITLE);
    const back = await sync();
    expect(back.updated).toEqual(['mcp.tokens.admin']);
    expect((await admin.getStrategies('mcp.tokens.admin', env))[0]?.constraints ?? []).toEqual([]);
  });

  it('from a shell without PORT, the webhook registered at the control plane is not moved: the command says what differs and how to change it', async () => {
    const { posts } = await receiver();
    await redis.del(registrationKeysOfShell.last, registrationKeysOfShell.ok);
    const out = await cliFromBareShell();
    expect(out.code, out.stderr).toBe(0);
    expect(out.stdout).toMatch(/webhook kept/);
    // Left alone, nothing registered: no registration recorded.
    expect((await shellRegistration()).state).toBe('not-attempted');
    expect(out.stdout).not.toMatch(/webhook: http:\/\/127\.0\.0\.1:8080/);
    expect(out.stderr).toContain('the Unleash webhook was NOT changed');
    expect(out.stderr).toContain(`Unleash posts flag events to ${webhookUrl}`);
    expect(out.stderr).toContain('This shell computes http://127.0.0.1:8080/v1/flags/events');
    expect(out.stderr).toContain('killswitch flags sync --replace-webhook --webhook-url http://127.0.0.1:8080/v1/flags/events');
    expect(await ourWebhooks()).toMatchObject([{ url: webhookUrl, secret: secretFingerprint(unleash.webhookSecret) }]);
    // And Unleash still posts flag events to the control plane, with its secret.
    touched.add('mcp.fetch.delete');
    await admin.setEnabled('mcp.fetch.delete', env, false);
    await until(() => posts.some((p) => p.body.featureName === 'mcp.fetch.delete'), 15_000, 'Unleash posts the event to the control plane');
    expect(posts.find((p) => p.body.featureName === 'mcp.fetch.delete')?.headers.authorization).toBe(unleash.webhookSecret);
  }, 60_000);

  it("a shell with another UNLEASH_WEBHOOK_SECRET does not rewrite the registered one; --replace-webhook does, and the control plane's start takes it back", async () => {
    const other = { ...config, unleashWebhookSecret: 'a-shell-with-another-secret' };
    const kept = await sync(FLAGS_DIR, other, webhookUrl, 'keep');
    expect(kept.webhook).toMatchObject({ result: 'kept', kept: { reason: 'differs', url: webhookUrl, urlDiffers: false, secretDiffers: true } });
    expect(await ourWebhooks()).toMatchObject([{ url: webhookUrl, secret: secretFingerprint(unleash.webhookSecret) }]);

    const moved = await cliFromBareShell(['--replace-webhook']);
    expect(moved.code, moved.stderr).toBe(0);
    expect(moved.stdout).toMatch(/webhook updated/);
    expect(moved.stdout).toContain('webhook: http://127.0.0.1:8080/v1/flags/events');
    expect(await ourWebhooks()).toMatchObject([{ url: 'http://127.0.0.1:8080/v1/flags/events' }]);
    // A control plane at webhookUrl reads that Unleash now posts elsewhere.
    expect(await shellRegistration()).toMatchObject({ state: 'elsewhere', by: 'flags sync', result: 'updated', url: 'http://127.0.0.1:8080/v1/flags/events', sameSecret: true });

    // At start the control plane's sync owns the webhook carrying its secret: back at its own URL.
    const back = await sync();
    expect(back.webhook).toMatchObject({ result: 'updated', url: webhookUrl, others: [] });
    expect(await ourWebhooks()).toMatchObject([{ url: webhookUrl }]);
  }, 60_000);

  it('upgrade from the published default, UNLEASH_WEBHOOK_SECRET unset: a shell finds the stored secret in DATABASE_URL and says to replace the old one; --replace-webhook and the start register the stored secret', async () => {
    const db = await new TestContext().setup();
    try {
      // Before the upgrade: the webhook was registered with the published default.
      const published = 'killswitch-dev-webhook-secret';
      await sync(FLAGS_DIR, { ...config, unleashWebhookSecret: published });
      expect(await ourWebhooks()).toMatchObject([{ url: webhookUrl, secret: secretFingerprint(published) }]);
      // The start generates and stores a secret; without the admin token (an external Unleash) it cannot re-register.
      const unset = { ...db.config({ unleashAdminToken: '*:*.not-a-token', port: unleash.webhookPort }), unleashWebhookSecret: loadConfig({}).unleashWebhookSecret };
      const refusedStart = await prepareUnleash(unset, pino({ level: 'silent' }));
      expect(refusedStart.embedded).toBeUndefined();
      const stored = (await db.pool().query<{ value: string }>(`SELECT value FROM settings WHERE key = 'unleash_webhook_secret'`)).rows[0]?.value;
      expect(stored).toBeDefined();
      expect(await ourWebhooks()).toMatchObject([{ secret: secretFingerprint(published) }]);

      // An operator's shell with DATABASE_URL and no UNLEASH_WEBHOOK_SECRET: kept, told why and what to run.
      const shell = { DATABASE_URL: db.databaseUrl, PUBLIC_URL: `http://127.0.0.1:${unleash.webhookPort}`, UNLEASH_WEBHOOK_SECRET: '' };
      const kept = await cliFromBareShell([], shell);
      expect(kept.code, kept.stderr).toBe(0);
      expect(kept.stdout).toMatch(/webhook kept/);
      expect(kept.stderr).toContain('the Unleash webhook was NOT changed');
      expect(kept.stderr).toContain(`old published default (${published})`);
      expect(kept.stderr).toContain(`killswitch flags sync --replace-webhook --webhook-url ${webhookUrl}`);
      // --replace-webhook registers the stored secret.
      const replaced = await cliFromBareShell(['--replace-webhook'], shell);
      expect(replaced.code, replaced.stderr).toBe(0);
      expect(replaced.stdout).toMatch(/webhook updated/);
      expect(await ourWebhooks()).toMatchObject([{ url: webhookUrl, secret: secretFingerprint(stored!) }]);

      // With the admin token, the start replaces the published default itself (here: put back first).
      await sync(FLAGS_DIR, { ...config, unleashWebhookSecret: published });
      const logs = new LogCapture();
      await prepareUnleash({ ...unset, unleashAdminToken: unleash.adminToken }, pino({ level: 'info' }, logs));
      expect(await ourWebhooks()).toMatchObject([{ url: webhookUrl, secret: secretFingerprint(stored!) }]);
      expect(logs.text).toContain('old published default');
      // A shell whose database stores no secret registers nothing, and says so.
      const empty = await new TestContext().setup();
      try {
        const none = await cliFromBareShell([], { ...shell, DATABASE_URL: empty.databaseUrl });
        expect(none.code, none.stderr).toBe(0);
        expect(none.stderr).toContain('the Unleash webhook was NOT registered or checked');
        expect((await cliFromBareShell(['--replace-webhook'], { ...shell, DATABASE_URL: empty.databaseUrl })).code).toBe(2);
        expect(await ourWebhooks()).toMatchObject([{ url: webhookUrl, secret: secretFingerprint(stored!) }]);
      } finally {
        await empty.teardown();
      }
    } finally {
      await db.teardown();
    }
  }, 90_000);

  it('creates the webhook when Unleash has none, also from a shell; --webhook-url names it; --no-webhook with it is refused', async () => {
    await deleteWebhooks(() => true);
    await redis.del(registrationKeysOfShell.last, registrationKeysOfShell.ok);
    const created = await cliFromBareShell(['--webhook-url', `http://127.0.0.1:${unleash.webhookPort}`]);
    expect(created.code, created.stderr).toBe(0);
    expect(created.stdout).toMatch(/webhook created/);
    expect(created.stdout).toContain(`webhook: ${webhookUrl}`);
    expect(await ourWebhooks()).toMatchObject([{ url: webhookUrl, secret: secretFingerprint(unleash.webhookSecret), enabled: true }]);
    // Recorded where the control plane's Flags page reads it.
    expect(await shellRegistration()).toMatchObject({ state: 'registered', by: 'flags sync', result: 'created', url: webhookUrl });
    // A shell whose admin token Unleash refuses: the sync fails, and so does the recorded registration.
    const refusedToken = await cliFromBareShell(['--webhook-url', `http://127.0.0.1:${unleash.webhookPort}`], { UNLEASH_ADMIN_TOKEN: '*:*.not-a-token' });
    expect(refusedToken.code).toBe(1);
    expect(await shellRegistration()).toMatchObject({ state: 'failed', by: 'flags sync', error: expect.stringMatching(/answered 40[13]/), registeredUrl: webhookUrl });
    const refused = await cliFromBareShell(['--no-webhook', '--replace-webhook']);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toMatch(/--no-webhook cannot be combined/);
  }, 60_000);

  it("two installations sharing one Unleash: neither's start moves the other's webhook", async () => {
    const otherUrl = 'http://127.0.0.1:9/v1/flags/events';
    const otherInstallation = { ...config, unleashWebhookSecret: 'the-other-installations-secret' };
    const theirs = await sync(FLAGS_DIR, otherInstallation, otherUrl);
    expect(theirs.webhook).toMatchObject({ result: 'created', url: otherUrl, others: [{ url: webhookUrl }] });
    const ours = await sync();
    expect(ours.webhook).toMatchObject({ result: 'updated', rewritten: true, url: webhookUrl, others: [{ url: otherUrl, enabled: true }] });
    const both = await ourWebhooks();
    expect(both.map((w) => w.url).sort()).toEqual([otherUrl, webhookUrl].sort());
    // An operator's shell of this installation finds its own and leaves the other alone.
    expect((await sync(FLAGS_DIR, config, webhookUrl, 'keep')).webhook).toMatchObject({ result: 'updated', rewritten: true });
    expect((await ourWebhooks()).length).toBe(2);
  }, 60_000);

  it('a webhook an older flags sync registered (URL not recorded) is left alone from a shell and taken over at start', async () => {
    await deleteWebhooks(() => true);
    await admin.createAddon({
      provider: 'webhook',
      enabled: true,
      description: 'killswitch control plane: flag changes applied at once (managed by flags sync)',
      parameters: { url: webhookUrl, authorization: unleash.webhookSecret, contentType: 'application/json' },
      events: ['feature-environment-disabled'],
      projects: ['*'],
      environments: ['*'],
    });
    const shell = await sync(FLAGS_DIR, config, webhookUrl, 'keep');
    expect(shell.webhook).toMatchObject({ result: 'kept', kept: { reason: 'unrecorded', url: null } });
    const start = await sync();
    expect(start.webhook).toMatchObject({ result: 'updated', others: [] });
    expect(await ourWebhooks()).toMatchObject([{ url: webhookUrl, secret: secretFingerprint(unleash.webhookSecret) }]);
  }, 60_000);

  it('a second webhook to the same URL is turned off (not deleted) by the start sync: each event is delivered once', async () => {
    const [current] = await ourWebhooks();
    const addon = (await admin.listAddons()).find((a) => a.id === current!.id)!;
    await admin.createAddon({ ...addon, parameters: { url: webhookUrl, authorization: unleash.webhookSecret, contentType: 'application/json' } });
    const report = await sync();
    expect(report.webhook).toMatchObject({ result: 'updated', rewritten: true, others: [] });
    // Unleash lists the integration last written first: in order of creation.
    const after = (await ourWebhooks()).sort((a, b) => a.id - b.id);
    expect(after.map((w) => [w.url, w.enabled])).toEqual([
      [webhookUrl, true],
      [webhookUrl, false],
    ]);
    expect(after[0]!.id).toBe(current!.id);
    await deleteWebhooks((w) => !w.enabled);
  });
});
