import { appendFile, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { HaltJournal } from '../../src/sessions/halt-journal.js';

// The disk journal of halts Postgres did not take (src/sessions/halt-journal.ts): what a replica, or
// one of its WORKERS processes, leaves there is found again by the next one.

const dirs: string[] = [];
const open: HaltJournal[] = [];
const newDir = async () => {
  const d = await mkdtemp(join(tmpdir(), 'ks-halt-journal-'));
  dirs.push(d);
  return d;
};
const journal = async (dir: string) => {
  const j = await HaltJournal.open(dir, 'ks');
  open.push(j);
  return j;
};
const entry = (id: string) => ({ id, tokenId: 't', sessionId: 's', trigger: 'WRITE_IN_READ_SESSION', haltToken: true, summary: {}, at: new Date(0).toISOString() });

afterEach(async () => {
  for (const j of open.splice(0)) await j.release();
  for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
});

describe('HaltJournal', () => {
  it('keeps an entry across a release (a restart): readable by the control plane only, gone once removed', async () => {
    const dir = await newDir();
    const first = await journal(dir);
    await first.append(entry('a'));
    await first.release();
    open.splice(open.indexOf(first), 1);
    const file = join(dir, 'halt-journal.ks.jsonl');
    expect((await stat(file)).mode & 0o777).toBe(0o600);

    const next = await journal(dir);
    expect(next.entries.map((e) => e.id)).toEqual(['a']);
    await next.remove(new Set(['a']));
    expect(next.size).toBe(0);
    expect(await readFile(file, 'utf8')).toBe('');
  });

  it('two processes sharing DATA_DIR write two files; the file of one that died is adopted by the other', async () => {
    const dir = await newDir();
    const mine = await journal(dir);
    const second = await journal(dir);
    await second.append(entry('live'));
    // A WORKERS process that died: its file is locked under a pid that no longer runs on this host.
    const dead = join(dir, 'halt-journal.ks.3.jsonl');
    await writeFile(dead, `${JSON.stringify(entry('b'))}\n`, { mode: 0o600 });
    await writeFile(`${dead}.lock`, `2147483646 ${hostname()}\n`);

    expect(await mine.adoptOrphans(true)).toBe(1);
    // The dead one's entries, never the live one's (its lock is held).
    expect(mine.entries.map((e) => e.id)).toEqual(['b']);
    expect(await second.adoptOrphans(true)).toBe(0);
    expect(second.entries.map((e) => e.id)).toEqual(['live']);
    await mine.remove(new Set(['b']));
    expect((await readdir(dir)).filter((n) => n.includes('.3.'))).toEqual([]);
  });

  it('skips a torn last line (never acknowledged) and keeps the entries around it', async () => {
    const dir = await newDir();
    const file = join(dir, 'halt-journal.ks.jsonl');
    await writeFile(file, `${JSON.stringify(entry('a'))}\n`);
    await appendFile(file, '{"id":"torn","tok');
    const j = await journal(dir);
    expect(j.entries.map((e) => e.id)).toEqual(['a']);
    expect(j.unreadable).toBe(1);
    // What is appended next is not glued to the torn line.
    await j.append(entry('c'));
    await j.release();
    open.splice(open.indexOf(j), 1);
    expect((await journal(dir)).entries.map((e) => e.id)).toEqual(['a', 'c']);
  });
});
