import { appendFile, copyFile, mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TestContext } from '../helpers/context.js';

const t = new TestContext();
beforeAll(() => t.setup());
afterAll(() => t.teardown());

describe('policy reloads on the audit trail', () => {
  it('the load at start and every reload that takes effect are POLICY_RELOAD rows with the file hash', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'ks-policy-'));
    const file = join(dir, 'policy.yaml');
    await copyFile('test/fixtures/decisions/policy.yaml', file);
    const app = await t.app({ policyFile: file });
    const first = app.ctx.policy.current().hash;
    await appendFile(file, '\n# a comment changes the hash\n');
    expect(await app.ctx.policy.reload()).toBe('reloaded');
    const second = app.ctx.policy.current().hash;
    expect(second).not.toBe(first);
    await new Promise((r) => setTimeout(r, 100));
    await app.ctx.audit.writer.flush();
    const { rows } = await t.pool().query(`SELECT action, details FROM audit_events WHERE kind = 'POLICY_RELOAD' ORDER BY ts, seq`);
    expect(rows.map((r: { action: string }) => r.action)).toEqual(['policy.loaded', 'policy.reloaded']);
    expect(rows[1].details).toMatchObject({ hash: second, previous_hash: first });
  });
});
