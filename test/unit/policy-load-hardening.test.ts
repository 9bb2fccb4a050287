import { execFileSync } from 'node:child_process';
import { closeSync, constants, mkdtempSync, openSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { policyCheck } from '../../src/cli/policy-check.js';
import { ConfigError } from '../../src/config.js';
import { loadPolicyFile, PolicyStore, parsePolicy, requirePolicyFile } from '../../src/policy/index.js';
import { POLICY_ISSUES_LISTED } from '../../src/policy/issues.js';
import { POLICY_FILE_MAX_BYTES } from '../../src/policy/load.js';
import type { PolicyRejectEvent } from '../../src/policy/store.js';

// What a fuzz review of the policy loader found (F3-F7): every broken file is refused with an issue at its
// line and column, as any invalid file is; nothing the file holds may stop a reload, hang it or eat memory.

const good = 'servers:\n  fs: { identity: { command: fs }, map: filesystem }\nroles:\n  code_agent: { allowed_servers: [fs] }\n';
const bomb = `${good}x-a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\nx-b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\nx-c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nx-d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\nx-e: [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\n`;

class Lines extends Writable {
  readonly lines: string[] = [];
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: () => void): void {
    this.lines.push(...chunk.toString('utf8').split('\n').filter(Boolean));
    cb();
  }
}

class Text extends Writable {
  text = '';
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: () => void): void {
    this.text += chunk.toString('utf8');
    cb();
  }
}

let dir: string;
let file: string;
let fifos: string[];
let stores: PolicyStore[];

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'ks-policy-hard-'));
  file = join(dir, 'policy.yaml');
  fifos = [];
  stores = [];
});

afterEach(async () => {
  for (const s of stores) await s.close();
  // A reader still blocked on a FIFO (the old code) gets end-of-file, so nothing stays stuck.
  for (const f of fifos) {
    try {
      closeSync(openSync(f, constants.O_WRONLY | constants.O_NONBLOCK));
    } catch {}
  }
  rmSync(dir, { recursive: true, force: true });
});

function mkfifo(path: string): string {
  execFileSync('mkfifo', [path]);
  fifos.push(path);
  return path;
}

const errorsOf = (text: string) => {
  const r = parsePolicy(text, 'p.yaml');
  expect(r.ok).toBe(false);
  return r.issues.filter((i) => i.severity === 'error');
};

describe('policy loader: aliases (F3)', () => {
  it('an alias bomb is an error issue at the alias that expands too far, not an exception', () => {
    const [issue, ...rest] = errorsOf(bomb);
    expect(rest).toEqual([]);
    expect(issue).toMatchObject({ file: 'p.yaml', line: 8, column: 38, path: 'x-d[7]' });
    expect(issue?.message).toMatch(/^aliases expand the file by more than 10000 values \(at this alias, \*c\)/);
  });

  it('an alias to no anchor, and one to the node that contains it, are error issues at the alias', () => {
    expect(errorsOf(`${good}x-y: [1, *nope]\n`)).toEqual([
      { severity: 'error', file: 'p.yaml', line: 5, column: 10, path: 'x-y[1]', message: 'alias *nope refers to no anchor: an anchor &nope must come before it' },
    ]);
    expect(errorsOf(`${good}x-y: &loop { a: *loop }\n`)).toEqual([
      { severity: 'error', file: 'p.yaml', line: 5, column: 17, path: 'x-y.a', message: 'alias *loop refers to a node that contains it (a structure without end)' },
    ]);
  });

  it('an anchor used by many servers loads (the expansion is bounded, not the number of uses)', () => {
    const names = Array.from({ length: 150 }, (_, i) => `s${i}`);
    const text = `servers:\n${names.map((n, i) => `  ${n}: ${i === 0 ? '&srv ' : ''}{ identity: { command: ${n} }, map: filesystem }`).join('\n')}\nroles:\n  code_agent: { allowed_servers: [s0] }\nrate_limits:\n  per_server:\n${names.map((n, i) => `    ${n}: ${i === 0 ? '&lim { max_calls_per_session: 5 }' : '*lim'}`).join('\n')}\n`;
    const r = parsePolicy(text, 'p.yaml');
    expect(r.issues.filter((i) => i.severity === 'error')).toEqual([]);
    expect(r.ok && r.policy.servers.get('s149')?.limits.maxCallsPerSession).toBe(5);
  });

  it('`killswitch policy check` exits 2 on an alias bomb and names file:line:column', async () => {
    writeFileSync(file, bomb);
    const out = new Text();
    const err = new Text();
    expect(await policyCheck(file, out, err)).toBe(2);
    expect(err.text).toContain(`${file}:8:38 `);
    expect(err.text).toContain('x-d[7]: aliases expand the file by more than 10000 values');
    expect(err.text).toContain(`${file}: invalid policy (1 error)`);
  });
});

describe('policy loader: numbers (F4)', () => {
  it.each(['.inf', '.Inf', '-.inf', '.nan', '1e400'])('%s is an error wherever a number is expected, at its position', (v) => {
    const text = `${good}rate_limits:\n  per_token: { max_open_sessions: ${v} }\n  per_server:\n    fs: { max_rows_returned: ${v} }\nlarge_result_bytes: ${v}\ncascade: { threshold: ${v}, window_calls: 5 }\n`;
    expect(errorsOf(text).map((i) => `${i.line}:${i.column} ${i.path}: ${i.message}`)).toEqual([
      `6:35 rate_limits.per_token.max_open_sessions: must be a finite number, not ${v}`,
      `8:30 rate_limits.per_server.fs.max_rows_returned: must be a finite number, not ${v}`,
      `9:21 large_result_bytes: must be a finite number, not ${v}`,
      `10:23 cascade.threshold: must be a finite number, not ${v}`,
    ]);
  });

  it('an integer past 2^53 - 1 is refused (Redis refuses a window of 1e300 calls in LRANGE); 2^53 - 1 is taken', () => {
    expect(errorsOf(`${good}cascade: { threshold: 3, window_calls: 1e300 }\n`)).toEqual([
      expect.objectContaining({ line: 5, column: 40, path: 'cascade.window_calls', message: '1e300 is too large: a number here may be at most 9007199254740991' }),
    ]);
    expect(errorsOf(`${good}rate_limits: { per_token: { max_calls_per_day: 9007199254740993 } }\n`)[0]?.path).toBe('rate_limits.per_token.max_calls_per_day');
    const r = parsePolicy(`${good}rate_limits: { per_token: { max_calls_per_day: 9007199254740991 } }\n`, 'p.yaml');
    expect(r.ok && r.policy.limits.token.maxCallsPerDay).toBe(Number.MAX_SAFE_INTEGER);
  });
});

describe('policy loader: what is read (F5, F6)', () => {
  it('a FIFO at the path is refused without waiting for a writer', { timeout: 3000 }, async () => {
    mkfifo(file);
    const r = await loadPolicyFile(file);
    expect(r.ok).toBe(false);
    expect(r.issues).toEqual([expect.objectContaining({ severity: 'error', line: 1, column: 1, message: `cannot read the policy file: ${file} is a FIFO (named pipe), not a regular file` })]);
  });

  it('a character device is refused before anything is read (/dev/zero never ends)', { timeout: 3000 }, async () => {
    const r = await loadPolicyFile('/dev/zero');
    expect(r.issues[0]?.message).toBe('cannot read the policy file: /dev/zero is a character device, not a regular file');
  });

  it('a file over POLICY_FILE_MAX_BYTES is refused; one at the cap is read', async () => {
    const over = `# ${'x'.repeat(POLICY_FILE_MAX_BYTES - 2)}\n`;
    writeFileSync(file, over);
    const r = await loadPolicyFile(file);
    expect(r.issues.map((i) => i.message)).toEqual([`cannot read the policy file: ${file} is larger than ${POLICY_FILE_MAX_BYTES} bytes (1 MiB), the most a policy file may be`]);
    writeFileSync(file, `${good}# ${'x'.repeat(POLICY_FILE_MAX_BYTES - good.length - 3)}\n`);
    expect((await loadPolicyFile(file)).ok).toBe(true);
  });

  it('a start (requirePolicyFile, PolicyStore.open) refuses a FIFO or a directory as POLICY_FILE, as a missing file', { timeout: 3000 }, async () => {
    mkfifo(file);
    const err = await requirePolicyFile(file).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as Error).message).toContain(`${file} is a FIFO (named pipe), not a regular file`);
    await expect(PolicyStore.open(file, { log: pino({ level: 'silent' }) })).rejects.toBeInstanceOf(ConfigError);
    await expect(requirePolicyFile(dir)).rejects.toThrow(`${dir} is a directory, not a regular file`);
  });
});

describe('policy reload: every broken file is rejected and reported (F3-F6)', () => {
  async function open(): Promise<{ store: PolicyStore; logs: Lines; rejects: PolicyRejectEvent[] }> {
    writeFileSync(file, good);
    const logs = new Lines();
    const store = await PolicyStore.open(file, { log: pino({ level: 'info' }, logs), watch: false, pollIntervalMs: 60_000, settleMs: 10 });
    stores.push(store);
    const rejects: PolicyRejectEvent[] = [];
    store.onReject((e) => rejects.push(e));
    return { store, logs, rejects };
  }
  const swap = (text: string) => {
    writeFileSync(join(dir, '.next.yaml'), text);
    renameSync(join(dir, '.next.yaml'), file);
  };

  it.each([
    ['an alias bomb', bomb, /:8:38 x-d\[7\]: aliases expand the file by more than 10000 values/],
    ['an alias to no anchor', `${good}x: *nope\n`, /:5:4 x: alias \*nope refers to no anchor/],
    ['max_open_sessions: .inf', `${good}rate_limits: { per_token: { max_open_sessions: .inf } }\n`, /:5:48 rate_limits\.per_token\.max_open_sessions: must be a finite number, not \.inf/],
  ])('%s swapped in by rename: rejected, logged at error, told to listeners; the good policy stays', async (_name, text, error) => {
    const { store, logs, rejects } = await open();
    const kept = store.current();
    swap(text);
    expect(await store.reload()).toBe('rejected');
    expect(store.current()).toBe(kept);
    expect(rejects).toHaveLength(1);
    expect(rejects[0]?.errors[0]).toMatch(error);
    expect(store.status().lastRejected?.errors[0]).toMatch(error);
    const logged = logs.lines.map((l) => JSON.parse(l) as { level: number; msg: string; errors?: string[] }).find((l) => l.msg.startsWith('policy file rejected'));
    expect(logged?.level).toBe(50);
    expect(logged?.errors?.[0]).toMatch(error);
  });

  it('a FIFO swapped in is rejected at once, a good file after it is taken, and close does not wait', { timeout: 5000 }, async () => {
    const { store, rejects } = await open();
    mkfifo(join(dir, '.fifo'));
    renameSync(join(dir, '.fifo'), file);
    fifos.push(file);
    expect(await store.reload()).toBe('rejected');
    expect(rejects[0]).toMatchObject({ hash: null, errors: [`cannot read the policy file: ${file} is a FIFO (named pipe), not a regular file`] });
    swap(`${good}  other: { allowed_servers: [fs] }\n`);
    expect(await store.reload()).toBe('reloaded');
    expect(store.current().roles.has('other')).toBe(true);
  });

  it('a file of 20,000 servers missing `identity` is refused with the first 100 errors and a count of the rest', () => {
    const text = `servers:\n${Array.from({ length: 20_000 }, (_, i) => `  s${i}: { map: filesystem }\n`).join('')}roles:\n  code_agent: { allowed_servers: [s0] }\n`;
    const r = parsePolicy(text, 'p.yaml');
    expect(r.ok).toBe(false);
    expect(r.issues).toHaveLength(POLICY_ISSUES_LISTED + 1);
    expect(r.omittedErrors).toBe(20_000 - POLICY_ISSUES_LISTED);
    expect(r.issues[0]).toMatchObject({ line: 2, column: 3, path: 'servers.s0', message: 'missing required key "identity"' });
    expect(r.issues.at(-1)).toMatchObject({ severity: 'error', line: 102, message: '19900 more errors from here on, not listed (only the first 100 problems are); fix these and check again' });
  });

  it('a key given twice is still an error at the second one, naming the first', () => {
    expect(errorsOf(`${good}  code_agent: { allowed_servers: [] }\n`)).toEqual([
      expect.objectContaining({ line: 5, column: 3, path: 'roles.code_agent', message: 'duplicate key "code_agent" (first at line 4): keys of a map must be unique' }),
    ]);
  });
});
