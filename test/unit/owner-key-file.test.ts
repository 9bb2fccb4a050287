import { mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { leaveOwnerKey, warnIfOwnerKeyLeft } from '../../src/tokens/owner-key-file.js';

// The first start's owner key goes to DATA_DIR/owner-key, readable by this user only; the log gets the path.

const KEY = 'ksop_AbCdEfGhIjKlMnOpQrStUv123456';
let root = '';
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'ks-owner-key-'));
});
afterAll(() => rm(root, { recursive: true, force: true }));

function recorder() {
  const lines: Array<{ level: string; obj: Record<string, unknown>; msg: string }> = [];
  const log = {
    warn: (obj: object, msg: string) => lines.push({ level: 'warn', obj: obj as Record<string, unknown>, msg }),
    error: (obj: object, msg: string) => lines.push({ level: 'error', obj: obj as Record<string, unknown>, msg }),
  };
  return { lines, log };
}

describe('leaveOwnerKey', () => {
  it('creates DATA_DIR, writes the key with mode 0600 (even over a leftover temporary file of the same pid) and replaces an earlier key file', async () => {
    const dir = join(root, 'data');
    const { lines, log } = recorder();
    expect(await leaveOwnerKey('ksop_earlier', dir, log)).toBe(join(dir, 'owner-key'));
    // A crashed start of a process with the same pid (PID 1 in a container) left its temporary file, readable by all.
    await writeFile(join(dir, `owner-key.${process.pid}.tmp`), 'stale', { mode: 0o644 });
    const path = await leaveOwnerKey(KEY, dir, log);
    expect(await readFile(path!, 'utf8')).toBe(`${KEY}\n`);
    expect((await stat(path!)).mode & 0o777).toBe(0o600);
    expect(await readdir(dir)).toEqual(['owner-key']);
    expect(lines.map((l) => [l.level, l.obj['path']])).toEqual([
      ['warn', path],
      ['warn', path],
    ]);
    expect(JSON.stringify(lines)).not.toContain(KEY);
  });

  it('DATA_DIR unusable: logs an error naming the path and the way out, without the key; no file is left', async () => {
    const blocker = join(root, 'not-a-dir');
    await writeFile(blocker, '');
    const { lines, log } = recorder();
    expect(await leaveOwnerKey(KEY, blocker, log)).toBeUndefined();
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({ level: 'error', obj: { path: join(blocker, 'owner-key') } });
    expect(lines[0]!.msg).toContain('killswitch operators create --role owner');
    expect(JSON.stringify(lines)).not.toContain(KEY);
  });

  it('warnIfOwnerKeyLeft warns while the file is there, and says nothing once it is deleted', async () => {
    const dir = join(root, 'left');
    const { lines, log } = recorder();
    await leaveOwnerKey(KEY, dir, log);
    lines.length = 0;
    await warnIfOwnerKeyLeft(dir, log);
    expect(lines).toEqual([expect.objectContaining({ level: 'warn', obj: { path: join(dir, 'owner-key') } })]);
    await rm(join(dir, 'owner-key'));
    lines.length = 0;
    await warnIfOwnerKeyLeft(dir, log);
    expect(lines).toEqual([]);
  });
});
