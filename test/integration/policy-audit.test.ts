import { createHash } from 'node:crypto';
import { appendFile, copyFile, mkdtemp, readFile, writeFile } from 'node:fs/promises';
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

  it('a rejected file is a policy.rejected row once (not on every retry), with both hashes and its first errors', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'ks-policy-'));
    const file = join(dir, 'policy.yaml');
    await copyFile('test/fixtures/decisions/policy.yaml', file);
    const app = await t.app({ policyFile: file });
    const good = await readFile(file, 'utf8');
    const kept = app.ctx.policy.current().hash;
    const sha = (text: string) => createHash('sha256').update(text).digest('hex');
    const rejectedRows = async () => {
      await app.ctx.audit.writer.flush();
      return (await t.pool().query(`SELECT kind, actor_type, actor_id, target, details FROM audit_events WHERE action = 'policy.rejected' ORDER BY ts, seq`)).rows;
    };
    const brokenA = 'servers: [\n';
    const brokenB = '# cut short\nservers: {}\n';
    await writeFile(file, brokenA);
    expect(await app.ctx.policy.reload()).toBe('rejected');
    let rows = await rejectedRows();
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({ kind: 'POLICY_RELOAD', actor_type: 'system', actor_id: 'policy-watcher', target: `policy:${file}` });
    expect(rows[0].details).toMatchObject({ rejected_hash: sha(brokenA), kept_hash: kept, errors_total: rows[0].details.errors.length });
    expect(rows[0].details.errors[0]).toContain(file);
    // retried (the watcher, the poll): the same file is no new row
    expect(await app.ctx.policy.reload()).toBe('rejected');
    await appendFile(file, '');
    expect(await app.ctx.policy.reload()).toBe('rejected');
    expect(await rejectedRows()).toHaveLength(1);
    // another broken version is a row; the first one put back is not
    await writeFile(file, brokenB);
    expect(await app.ctx.policy.reload()).toBe('rejected');
    await writeFile(file, brokenA);
    expect(await app.ctx.policy.reload()).toBe('rejected');
    rows = await rejectedRows();
    expect(rows.map((r: { details: { rejected_hash: string } }) => r.details.rejected_hash)).toEqual([sha(brokenA), sha(brokenB)]);
    expect(rows[1].details.errors.length).toBeLessThanOrEqual(5);
    // once another policy is in force, the same broken file rejected again is a new row
    await writeFile(file, `${good}\n# changed\n`);
    await app.ctx.policy.reload(); // (or the watcher took it first)
    expect(app.ctx.policy.current().hash).toBe(sha(`${good}\n# changed\n`));
    await writeFile(file, brokenA);
    expect(await app.ctx.policy.reload()).toBe('rejected');
    rows = await rejectedRows();
    expect(rows).toHaveLength(3);
    expect(rows[2].details).toMatchObject({ rejected_hash: sha(brokenA), kept_hash: app.ctx.policy.current().hash });
  });
});
