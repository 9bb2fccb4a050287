import type { ChildProcess } from 'node:child_process';
import { readFile, stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from 'vitest';
import { TestContext } from '../helpers/context.js';
import { api, killChildren, startChild, withTimeout } from '../helpers/control-plane.js';

// The first start of a real `killswitch start` on an empty database: the owner key it creates reaches the
// human through a file only this user can read, never through stdout or stderr (what log shippers keep).
// The child runs the flags sync against the run's shared Unleash, which changes nothing there.

const unleash = inject('unleash');
const t = new TestContext();
const children: ChildProcess[] = [];

beforeAll(() => t.setup());
afterEach(() => killChildren(children));
afterAll(() => t.teardown());

const stop = async (cp: Awaited<ReturnType<typeof startChild>>) => {
  cp.child.kill('SIGTERM');
  expect((await withTimeout(cp.exited, 30_000, 'the control plane to stop')).code).toBe(0);
};

describe('first start: the owner key', () => {
  it('is written to DATA_DIR/owner-key (0600) and logged by path only; stdout holds JSON lines only; a later start warns while the file is there', { timeout: 120_000 }, async () => {
    const path = join(t.dataDir, 'owner-key');
    const cp = await startChild(t, unleash, {}, children);
    const { stdout, stderr } = cp.output();
    expect(`${stdout}\n${stderr}`).not.toMatch(/ksop_/);
    const key = (await readFile(path, 'utf8')).trim();
    expect(key).toMatch(/^ksop_/);
    expect((await stat(path)).mode & 0o777).toBe(0o600);
    // It is the owner key: the admin API takes it.
    expect((await api(cp.base, 'GET', '/v1/operator-keys', { authorization: `Bearer ${key}` })).status).toBe(200);

    // Every stdout line parses as a log line: nothing a log pipeline would store as free text.
    for (const line of stdout.split('\n').filter((l) => l.trim() !== '')) expect(() => JSON.parse(line), line).not.toThrow();
    const told = cp.logs().filter((l) => String(l['msg']).startsWith('first start: created an owner operator key'));
    expect(told).toEqual([expect.objectContaining({ level: 40, path })]);
    await stop(cp);

    // Still there at the next start: a standing owner credential on disk, so the log says so.
    const again = await startChild(t, unleash, {}, children);
    expect(again.logs().filter((l) => String(l['msg']).startsWith('first start'))).toEqual([]);
    expect(again.logs().filter((l) => String(l['msg']).startsWith('the owner operator key of the first start is still in'))).toEqual([expect.objectContaining({ level: 40, path })]);
    expect((await readFile(path, 'utf8')).trim()).toBe(key);
    await stop(again);

    // Deleted, as the log asks: nothing more is said.
    await unlink(path);
    const third = await startChild(t, unleash, {}, children);
    expect(third.logs().filter((l) => String(l['path']) === path)).toEqual([]);
    await stop(third);
  });
});
