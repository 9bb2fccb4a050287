import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { FLAGS_AT_START_ENV, flagsAtStartFromPrimary } from '../../src/config.js';
import type { StartFlagsRead } from '../../src/flags/service.js';
import { flagsAtStartFromEnv } from '../../src/flags/setup.js';

// House rule: src/config.ts is the only reader of process.env; everything else is handed its values.

function sourceFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) return sourceFiles(path);
    return /\.ts$/.test(name) ? [path] : [];
  });
}

describe('the one reader of process.env', () => {
  it('no module under src/ but src/config.ts mentions process.env', () => {
    const readers = sourceFiles('src').filter((f) => f !== join('src', 'config.ts') && /\bprocess\.env\b/.test(readFileSync(f, 'utf8')));
    expect(readers).toEqual([]);
  });
});

describe('KILLSWITCH_FLAGS_AT_START (primary to worker, WORKERS > 1)', () => {
  const previous = process.env[FLAGS_AT_START_ENV];
  afterEach(() => {
    if (previous === undefined) delete process.env[FLAGS_AT_START_ENV];
    else process.env[FLAGS_AT_START_ENV] = previous;
  });

  const read: StartFlagsRead = { off: ['ks.filesystem.write'], archived: ['ks.old'], at: 1_765_000_000_000 };

  it('a worker reads what its primary wrote (src/cluster.ts: JSON under KILLSWITCH_FLAGS_AT_START)', () => {
    expect(FLAGS_AT_START_ENV).toBe('KILLSWITCH_FLAGS_AT_START');
    const workerEnv = { [FLAGS_AT_START_ENV]: JSON.stringify(read) };
    expect(flagsAtStartFromEnv(flagsAtStartFromPrimary(workerEnv))).toEqual(read);
    // What `startServer(config, { worker: true })` calls: the process's own environment, read in config.ts.
    process.env[FLAGS_AT_START_ENV] = JSON.stringify(read);
    expect(flagsAtStartFromEnv()).toEqual(read);
  });

  it('absent, empty or unreadable: nothing is seeded', () => {
    expect(flagsAtStartFromPrimary({})).toBeUndefined();
    expect(flagsAtStartFromEnv(undefined)).toBeUndefined();
    expect(flagsAtStartFromEnv('')).toBeUndefined();
    expect(flagsAtStartFromEnv('{not json')).toBeUndefined();
    expect(flagsAtStartFromEnv(JSON.stringify({ off: 'ks.x', archived: [], at: 1 }))).toBeUndefined();
    expect(flagsAtStartFromEnv(JSON.stringify({ off: [], archived: [1], at: 1 }))).toBeUndefined();
    expect(flagsAtStartFromEnv(JSON.stringify({ off: [], archived: [] }))).toBeUndefined();
    delete process.env[FLAGS_AT_START_ENV];
    expect(flagsAtStartFromEnv()).toBeUndefined();
  });
});
