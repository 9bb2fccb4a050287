import { createHash } from 'node:crypto';
import { appendFileSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { PolicyFileError, type PolicyReloadEvent, PolicyStore, parsePolicy } from '../../src/policy/index.js';
import { GUARDED_SECTIONS } from '../../src/policy/sections.js';
import type { PolicyRejectEvent } from '../../src/policy/store.js';

const policyText = (servers: string[]) =>
  `servers:\n${servers.map((s) => `  ${s}: { identity: { command: ${s} }, map: filesystem }`).join('\n')}\nroles:\n  code_agent: { allowed_servers: [${servers.join(', ')}] }\n`;

class Lines extends Writable {
  readonly lines: string[] = [];
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: () => void): void {
    this.lines.push(...chunk.toString('utf8').split('\n').filter(Boolean));
    cb();
  }
}

async function until(what: string, check: () => boolean, timeoutMs = 5000): Promise<void> {
  const start = Date.now();
  while (!check()) {
    if (Date.now() - start > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

let dir: string;
let file: string;
let logs: Lines;
let stores: PolicyStore[];

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'ks-policy-'));
  file = join(dir, 'policy.yaml');
  logs = new Lines();
  stores = [];
});

afterEach(async () => {
  for (const s of stores) await s.close();
  rmSync(dir, { recursive: true, force: true });
});

async function open(opts: { watch?: boolean; pollIntervalMs?: number; settleMs?: number } = {}): Promise<PolicyStore> {
  const store = await PolicyStore.open(file, { log: pino({ level: 'debug' }, logs), ...opts });
  stores.push(store);
  return store;
}

const sha = (text: string) => createHash('sha256').update(text).digest('hex');

describe('PolicyStore', () => {
  it('refuses to start on a broken file, with every error and its line', async () => {
    writeFileSync(file, 'servers:\n  fs: { identity: { command: x }, map: nope }\nroles: {}\n');
    const err = await PolicyStore.open(file, { log: pino({ level: 'silent' }) }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PolicyFileError);
    expect((err as Error).message).toContain(`${file}:2:40 servers.fs.map: unknown map "nope"`);
  });

  it('refuses to start without a file', async () => {
    await expect(PolicyStore.open(join(dir, 'missing.yaml'), { log: pino({ level: 'silent' }) })).rejects.toThrow(/POLICY_FILE=.* is invalid: no file at .*missing\.yaml/);
  });

  it('hot-reloads on change (fs.watch) and tells listeners the new hash', async () => {
    writeFileSync(file, policyText(['a']));
    const store = await open({ pollIntervalMs: 60_000 });
    expect(store.status().watching).toBe('fs.watch');
    expect(store.current().hash).toBe(sha(policyText(['a'])));
    const events: PolicyReloadEvent[] = [];
    store.onReload((e) => {
      events.push(e);
    });

    writeFileSync(file, policyText(['a', 'b']));
    await until('reload', () => events.length === 1);
    expect(store.current().servers.has('b')).toBe(true);
    expect(events[0]).toMatchObject({ hash: sha(policyText(['a', 'b'])), previousHash: sha(policyText(['a'])), path: file });
    expect(events[0]?.policy).toBe(store.current());
  });

  it('sees a file replaced by rename, as editors and config maps do', async () => {
    writeFileSync(file, policyText(['a']));
    const store = await open({ pollIntervalMs: 60_000 });
    writeFileSync(join(dir, '.policy.yaml.tmp'), policyText(['c']));
    renameSync(join(dir, '.policy.yaml.tmp'), file);
    await until('reload after rename', () => store.current().servers.has('c'));
  });

  it('keeps the last good policy on a broken file, logs why, and recovers when it is fixed', async () => {
    writeFileSync(file, policyText(['a']));
    const store = await open({ pollIntervalMs: 60_000 });
    const good = store.current();
    let reloads = 0;
    store.onReload(() => {
      reloads++;
    });

    writeFileSync(file, `${policyText(['a'])}  other: { allowed_servers: [zzz] }\n`);
    await until('rejection', () => store.status().lastError !== null);
    expect(store.current()).toBe(good);
    expect(store.status().lastError).toMatch(/roles\.other\.allowed_servers\[0\]: unknown server "zzz"/);
    const logged = logs.lines.map((l) => JSON.parse(l) as { msg: string; errors?: string[]; kept_hash?: string }).find((l) => l.msg.includes('rejected'));
    expect(logged?.kept_hash).toBe(good.hash);
    expect(logged?.errors?.[0]).toMatch(/:5:\d+ roles\.other\.allowed_servers\[0\]/);
    expect(reloads).toBe(0);

    writeFileSync(file, 'servers: [broken');
    await until('second rejection', () => (store.status().lastError ?? '').includes(':1:'));
    expect(store.current()).toBe(good);

    writeFileSync(file, policyText(['a', 'd']));
    await until('recovery', () => store.current().servers.has('d'));
    expect(store.status().lastError).toBeNull();
    expect(reloads).toBe(1);
  });

  it('keeps the policy when the file disappears', async () => {
    writeFileSync(file, policyText(['a']));
    const store = await open({ pollIntervalMs: 60_000 });
    rmSync(file);
    expect(await store.reload()).toBe('rejected');
    expect(store.current().servers.has('a')).toBe(true);
    expect(store.status().lastError).toMatch(/cannot read the policy file/);
  });

  it('falls back to polling without fs.watch', async () => {
    writeFileSync(file, policyText(['a']));
    const store = await open({ watch: false, pollIntervalMs: 50 });
    expect(store.status().watching).toBe('polling');
    writeFileSync(file, policyText(['a', 'e']));
    await until('poll reload', () => store.current().servers.has('e'));
  });

  it('an unchanged file is not a reload', async () => {
    writeFileSync(file, policyText(['a']));
    const store = await open({ pollIntervalMs: 60_000 });
    expect(await store.reload()).toBe('unchanged');
    writeFileSync(file, readFileSync(file));
    expect(await store.reload()).toBe('unchanged');
  });

  it('stops watching when closed', async () => {
    writeFileSync(file, policyText(['a']));
    const store = await open({ pollIntervalMs: 30 });
    await store.close();
    writeFileSync(file, policyText(['a', 'f']));
    await new Promise((r) => setTimeout(r, 300));
    expect(store.current().servers.has('f')).toBe(false);
  });

  it('a file rewritten in place in two parts, paused for less than the settle time, is never taken half-written', async () => {
    // The half-written file drops no section of the file in force, so only the settle wait keeps it out.
    const db = `servers:\n  fs: { identity: { command: fs }, map: filesystem }\n  postgres: { identity: { command: pg }, class: db }\nroles:\n  admin: { allowed_servers: [fs, postgres] }\n`;
    writeFileSync(file, db);
    const store = await open({ watch: false, pollIntervalMs: 60_000, settleMs: 1000 });
    const current: string[] = [];
    store.onReload((e) => {
      current.push(e.hash);
    });
    const head = `${db}  reader: { allowed_servers: [fs] }\n`;
    const full = `${head}prohibited_capabilities: [database_write]\n`;
    writeFileSync(file, head);
    expect(parsePolicy(head, file).ok).toBe(true);
    const first = store.reload();
    await new Promise((r) => setTimeout(r, 100));
    appendFileSync(file, full.slice(head.length));
    expect(await first).toBe('reloaded');
    expect(await store.reload()).toBe('unchanged');
    expect(current).toEqual([sha(full)]);
    expect(store.current().hash).toBe(sha(full));
    expect(store.current().hash).not.toBe(sha(head));
  });

  it('a reload that drops a section the policy in force has is rejected (the old policy stays); written out empty, it is taken', async () => {
    const withSection = `${policyText(['a'])}prohibited_capabilities: [file_write]\n`;
    writeFileSync(file, withSection);
    const store = await open({ watch: false, pollIntervalMs: 60_000, settleMs: 10 });
    const rejects: PolicyRejectEvent[] = [];
    store.onReject((e) => rejects.push(e));

    writeFileSync(file, policyText(['a', 'b']));
    expect(await store.reload()).toBe('rejected');
    expect(store.current().hash).toBe(sha(withSection));
    expect(rejects).toHaveLength(1);
    expect(rejects[0]?.hash).toBe(sha(policyText(['a', 'b'])));
    expect(rejects[0]?.errors[0]).toContain(`${file}:1:1 prohibited_capabilities: missing, but the policy in force has it`);
    expect(rejects[0]?.errors[0]).toContain('`prohibited_capabilities: []`');
    expect(store.status().lastError).toContain('prohibited_capabilities: missing');
    expect(store.status().lastRejected).toMatchObject({ hash: sha(policyText(['a', 'b'])), errors: rejects[0]?.errors });
    expect(logs.lines.some((l) => l.includes('policy file rejected; keeping the last good policy') && l.includes('prohibited_capabilities'))).toBe(true);

    const emptied = `${policyText(['a', 'b'])}prohibited_capabilities: []\n`;
    writeFileSync(file, emptied);
    expect(await store.reload()).toBe('reloaded');
    expect(store.current().hash).toBe(sha(emptied));
    expect(store.status()).toMatchObject({ lastError: null, lastRejected: null });
    // A start takes the file as it is: there is no policy in force to compare with.
    writeFileSync(file, policyText(['a']));
    expect((await open({ watch: false, pollIntervalMs: 60_000 })).current().hash).toBe(sha(policyText(['a'])));
  });

  it('every guarded section has an explicit form that the schema accepts and that means the same as leaving it out', () => {
    const base = `${policyText(['a'])}  dba: { allowed_servers: [a] }\n`;
    const omitted = parsePolicy(base, 'x.yaml');
    expect(omitted.ok).toBe(true);
    const comparable = (p: unknown) =>
      JSON.stringify({ ...(p as object), hash: 0, loadedAt: 0, warnings: 0 }, (_k, v: unknown) => (v instanceof Map ? [...v] : v instanceof Set ? [...v] : v));
    for (const [key, explicit] of Object.entries(GUARDED_SECTIONS)) {
      const written = parsePolicy(`${base}${explicit}\n`, 'x.yaml');
      expect(written.ok, `${key}: ${JSON.stringify(written.issues)}`).toBe(true);
      if (written.ok && omitted.ok) expect(comparable(written.policy), key).toBe(comparable(omitted.policy));
    }
  });
});
