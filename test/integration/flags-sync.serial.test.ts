import { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, inject, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { FLAGS_DIR, syncFromConfig } from '../../src/flags/setup.js';
import { MANAGED_TITLE, WEBHOOK_DESCRIPTION } from '../../src/flags/sync.js';
import { restoreFlag, testAdmin, testPolicyNames } from '../helpers/unleash.js';

// `flags sync` against the run's real unleash-server: idempotent, never loosens what an operator did.

const unleash = inject('unleash');
const admin = testAdmin(unleash);
const env = unleash.environment;
const config = loadConfig({}, { unleashUrl: unleash.apiUrl, unleashAdminToken: unleash.adminToken, unleashEnvironment: env, unleashWebhookSecret: unleash.webhookSecret });
const webhookUrl = `http://127.0.0.1:${unleash.webhookPort}/v1/flags/events`;
const touched = new Set<string>();
const tmpDirs: string[] = [];

async function sync(flagsDir = FLAGS_DIR) {
  return syncFromConfig(config, { names: await testPolicyNames(), flagsDir, webhookUrl });
}

afterEach(async () => {
  for (const flag of touched) await restoreFlag(unleash, flag);
  touched.clear();
});

afterAll(async () => {
  for (const d of tmpDirs) await rm(d, { recursive: true, force: true });
});

describe('flags sync (real unleash-server)', () => {
  it('is idempotent: a second run finds every flag unchanged, one webhook, the context fields with their values', async () => {
    await sync();
    const report = await sync();
    expect(report.created).toEqual([]);
    expect(report.updated).toEqual([]);
    expect(report.drifted).toEqual([]);
    expect(report.unchanged).toContain('mcp.enabled');
    expect(report.unchanged).toContain('mcp.filesystem.write');
    expect(report.webhook).toBe('updated');
    expect((await admin.listAddons()).filter((a) => a.description === WEBHOOK_DESCRIPTION)).toHaveLength(1);
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
});
