import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rowHash } from '../../src/audit/chain.js';
import { AUDIT_COLUMN_NAMES, type AuditRecord } from '../../src/audit/record.js';
import { killswitch } from '../helpers/cli.js';
import { bearer, TestContext } from '../helpers/context.js';
import { GatewayDriver } from '../helpers/gateway-client.js';
import { until } from '../helpers/unleash.js';

// `killswitch audit verify --file`: an auditor with an export of the trail and no database. A real control
// plane writes the rows (allows, denials, results, operator actions), the export comes through the API, and
// the CLI verifies it with a DATABASE_URL that cannot be reached (it must not try).

const POLICY = 'test/fixtures/decisions/policy.yaml';
const t = new TestContext();
let app: FastifyInstance;
let gw: GatewayDriver;
let dir: string;
let sessionA: string;
/** Every audit row of the database, oldest first, as the export orders them: what the first export (JSON Lines) holds. */
let dbRows: AuditRecord[];
/**
 * What each export of every row holds: the database's rows when it was asked for. Each export adds its own
 * two ADMIN rows (`audit.exported`, `audit.export_ended`: ADR 0035), so the CSV, exported second, holds the
 * first export's too.
 */
const exported: Record<'jsonl' | 'csv', AuditRecord[]> = { jsonl: [], csv: [] };
const allRows = async () => {
  await app.ctx.audit.writer.flush();
  return (await t.pool().query<AuditRecord>('SELECT * FROM audit_events ORDER BY ts, id')).rows;
};
/** The chain heads of `rows`: each chain's last row, as `audit verify` on the database then reported them. */
const headsOf = (rows: AuditRecord[]) => new Set([...new Map(rows.map((r) => [r.replica_id, r.hash])).values()]);
const files: Record<'jsonl' | 'csv' | 'sessionJsonl' | 'sessionCsv', string> = { jsonl: '', csv: '', sessionJsonl: '', sessionCsv: '' };

/** No database for the CLI: one it would fail to reach, so a connection attempt shows as exit 4. */
const OFFLINE = { DATABASE_URL: 'postgres://nobody@127.0.0.1:1/rv_vf_none', LOG_LEVEL: 'warn' };
const verify = (args: string[]) => killswitch(['audit', 'verify', ...args], { env: OFFLINE });

async function verifyJson(file: string, more: string[] = []) {
  const res = await verify(['--file', file, '--json', ...more]);
  return { code: res.code, report: JSON.parse(res.stdout || '{}'), stderr: res.stderr };
}

async function exportOf(query: string): Promise<string> {
  const res = await app.inject({ method: 'GET', url: `/v1/audit/export?${query}`, headers: bearer(gw.owner) });
  expect(res.statusCode, res.body).toBe(200);
  return res.body;
}

function save(name: string, text: string): string {
  const file = join(dir, name);
  writeFileSync(file, text);
  return file;
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'rv_vf_'));
  await t.setup();
  app = await t.app({ policyFile: POLICY });
  gw = await new GatewayDriver(t, app).init();
  const rw = await gw.token('rw');
  const ro = await gw.token('ro');
  const a = await gw.session(rw.raw, { purpose: 'ünïcödé purpose 🙂' });
  const b = await gw.session(rw.raw);
  sessionA = a.session_id;
  const client = { name: '=HYPERLINK("http://evil")', version: '-1', user_agent: '@agent +x' };
  // Allows with nested arguments, numeric-looking keys and unicode, their results, a denial, calls of another session between.
  for (let i = 0; i < 3; i++) {
    const d = await gw.decide(rw.raw, {
      server: 'filesystem',
      tool: 'write_file',
      session_id: a.session_id,
      client,
      arguments: { path: "docs/notes.md", i, content: '日本語 "quoted", commas\nand lines', nested: { '10': [1, 2.5, null, { deep: true }], '2': 'two', z: -0.000001 } },
    });
    expect(d.decision, JSON.stringify(d)).toBe('allow');
    expect((await gw.result(rw.raw, d.decision_id, { status: i === 2 ? 'error' : 'success', duration_ms: 12, result_bytes: 100 + i, rows: i, ...(i === 2 ? { error: '-1 rows: =SUM(A1)' } : {}) })).statusCode).toBe(200);
    expect((await gw.decide(rw.raw, { server: 'filesystem', tool: 'read_text_file', session_id: b.session_id, arguments: { path: `other/${i}` } })).decision).toBe('allow');
  }
  expect((await gw.decide(rw.raw, { server: 'memory', tool: 'delete_entities', session_id: a.session_id, client, arguments: { entityNames: ['x', '=y'] } })).decision).toBe('deny');
  const s = await gw.session(ro.raw);
  expect((await gw.decide(ro.raw, { server: 'filesystem', tool: 'write_file', session_id: s.session_id, arguments: { path: 'a', content: '' } })).decision).toBe('deny');
  dbRows = exported.jsonl = await allRows();
  files.jsonl = save('all.jsonl', await exportOf('format=jsonl'));
  // The first export's audit.export_ended row is written when its response has closed.
  await until(async () => (await allRows()).some((r) => r.action === 'audit.export_ended'), 5_000, 'the first export ended');
  exported.csv = await allRows();
  files.csv = save('all.csv', await exportOf('format=csv'));
  files.sessionJsonl = save('session.jsonl', await exportOf(`format=jsonl&session=${a.session_id}`));
  files.sessionCsv = save('session.csv', await exportOf(`format=csv&session=${a.session_id}`));
  // What the files must hold for the tests to mean something: rows of every kind, cells CSV escapes.
  expect(dbRows.some((r) => r.client_name === '=HYPERLINK("http://evil")')).toBe(true);
  expect(dbRows.some((r) => r.kind === 'ADMIN') && dbRows.some((r) => r.decision === 'deny') && dbRows.some((r) => r.kind === 'RESULT')).toBe(true);
  const csv = readFileSync(files.csv, 'utf8');
  expect(csv).toContain(`"'=HYPERLINK(""http://evil"")"`);
  expect(csv).toContain("'@agent +x");
}, 60_000);

afterAll(async () => {
  rmSync(dir, { recursive: true, force: true });
  await t.teardown();
});

describe('an export as the API serves it verifies offline', () => {
  it.each(['jsonl', 'csv'] as const)('%s, every row: exit 0, each row verified and linked, the same chain heads as the database', async (format) => {
    const { code, report } = await verifyJson(files[format]);
    expect(code, JSON.stringify(report.broken)).toBe(0);
    const rows = exported[format];
    expect(report).toMatchObject({ verified: true, file: { format, detected_by: 'content' }, rows: rows.length, verified_rows: rows.length, broken_rows: 0, gaps: 0, truncated: null });
    const chains = new Set(rows.map((r) => r.replica_id)).size;
    // Every row but each chain's first is linked to the one before; chains starting at seq 1 link to the genesis hash.
    expect(report.links).toBe(rows.length - chains + rows.filter((r) => r.seq === 1).length);
    const db = await app.ctx.audit.verify();
    expect(db.ok).toBe(true);
    // The heads the database had when the file was exported (the exports' own rows have moved them on since).
    expect(new Set(report.heads.map((h: { hash: string }) => h.hash))).toEqual(headsOf(rows));
  });

  it('the text report says the format, the rows and links, and that without a witness the file is only consistent in itself', async () => {
    const res = await verify(['--file', files.csv]);
    expect(res.code).toBe(0);
    expect(res.stdout).toContain(`audit verify: file ${files.csv} (CSV, by its content)`);
    expect(res.stdout).toMatch(new RegExp(`audit verify: ${exported.csv.length} rows in \\d+ chains: OK`));
    expect(res.stdout).toContain('no witnessed position is in the file');
  });

  it('reads standard input with --file -', async () => {
    const { stdout } = await promisify(execFile)('sh', ['-c', `node ${resolve('bin/killswitch.js')} audit verify --file - --json < ${files.jsonl}`], { env: { ...process.env, ...OFFLINE } });
    expect(JSON.parse(stdout)).toMatchObject({ verified: true, rows: dbRows.length, file: { path: '-', format: 'jsonl' } });
  });
});

describe('a filtered export', () => {
  it.each(['sessionJsonl', 'sessionCsv'] as const)('%s (one session): exit 0, its gaps reported as normal', async (which) => {
    const { code, report } = await verifyJson(files[which]);
    expect(code, JSON.stringify(report.broken)).toBe(0);
    const sessionRows = dbRows.filter((r) => r.session_id === sessionA);
    expect(report).toMatchObject({ rows: sessionRows.length, verified_rows: sessionRows.length, broken_rows: 0 });
    expect(report.gaps).toBeGreaterThan(0);
    const text = await verify(['--file', files[which]]);
    expect(text.stdout).toContain('gaps: rows of a chain that are not in the file, normal for a filtered export');
  });

  it('with --complete (a claim that it was not filtered) its gaps are rows removed: exit 1', async () => {
    const { code, report } = await verifyJson(files.sessionJsonl, ['--complete']);
    expect(code).toBe(1);
    expect(report.broken[0].reason).toMatch(/are missing before this row \(--complete/);
  });

  it('--expect: a position in the file must match; one the file does not hold is ABSENT, not a failure; --witnesses names every chain', async () => {
    const inFile = dbRows.find((r) => r.session_id === sessionA)!;
    const outside = dbRows.find((r) => r.session_id !== sessionA && r.replica_id === inFile.replica_id)!;
    const ok = await verifyJson(files.sessionJsonl, ['--expect', `${inFile.replica_id}:${inFile.seq}:${inFile.hash}`, '--expect', `${outside.replica_id}:${outside.seq}:${outside.hash}`]);
    expect(ok.code).toBe(0);
    expect(ok.report.witnesses.map((w: { result: string }) => w.result)).toEqual(['ok', 'absent']);
    const wrong = await verifyJson(files.sessionJsonl, ['--expect', `${inFile.replica_id}:${inFile.seq}:${'0'.repeat(64)}`]);
    expect(wrong.code).toBe(1);
    expect(wrong.report.witnesses[0]).toMatchObject({ result: 'mismatch' });
    // A head log naming none of the file's chains: each is UNWITNESSED.
    const heads = save('heads.log', `${outside.replica_id.replace(/^./, (c) => (c === 'a' ? 'b' : 'a'))}:1:${'1'.repeat(64)}\n`);
    const planted = await verifyJson(files.sessionJsonl, ['--witnesses', heads]);
    expect(planted.code).toBe(1);
    expect(planted.report.unwitnessed.length).toBeGreaterThan(0);
  });
});

describe('a file that was changed', () => {
  const lines = (file: string) => readFileSync(file, 'utf8').split('\n');

  it('jsonl: one field of one row modified: exit 1 naming that row', async () => {
    const all = lines(files.jsonl);
    const i = all.findIndex((l) => l.includes('"decision":"deny"'));
    const target = JSON.parse(all[i]!) as AuditRecord;
    all[i] = all[i]!.replace('"decision":"deny"', '"decision":"allow"');
    const { code, report } = await verifyJson(save('modified.jsonl', all.join('\n')));
    expect(code).toBe(1);
    expect(report.broken).toEqual([{ line: i + 1, id: target.id, replica_id: target.replica_id, seq: target.seq, reason: 'content does not match its hash: the row was modified' }]);
  });

  it('csv: the client name cell of one row modified: exit 1 naming that row', async () => {
    const all = lines(files.csv);
    const col = AUDIT_COLUMN_NAMES.indexOf('id');
    const i = all.findIndex((l) => l.includes('evil'));
    all[i] = all[i]!.replace('evil', 'good');
    const { code, report } = await verifyJson(save('modified.csv', all.join('\n')));
    expect(code).toBe(1);
    expect(report.broken).toHaveLength(1);
    expect(report.broken[0]).toMatchObject({ line: i + 1, id: all[i]!.split(',')[col], reason: 'content does not match its hash: the row was modified' });
  });

  it('a row modified and re-hashed: it verifies alone, the next row of its chain does not link to it', async () => {
    const all = lines(files.jsonl);
    const i = all.findIndex((l) => l.includes('"decision":"deny"'));
    const row = JSON.parse(all[i]!) as AuditRecord;
    const next = all.findIndex((l) => l.includes(`"replica_id":"${row.replica_id}","seq":${row.seq + 1},`));
    expect(next).toBeGreaterThan(i);
    const forged = { ...row, decision: 'allow' as const };
    forged.hash = rowHash(forged.prev_hash, forged);
    all[i] = JSON.stringify(forged);
    const { code, report } = await verifyJson(save('rehashed.jsonl', all.join('\n')));
    expect(code).toBe(1);
    expect(report.broken).toHaveLength(1);
    expect(report.broken[0]).toMatchObject({ line: next + 1, seq: row.seq + 1, reason: expect.stringMatching(/^prev_hash does not match the row before \(seq \d+/) });
  });

  it('two rows swapped: exit 1, the moved row named; a row deleted: a gap, rows missing with --complete', async () => {
    const all = lines(files.jsonl);
    [all[3], all[4]] = [all[4]!, all[3]!];
    const swapped = await verifyJson(save('swapped.jsonl', all.join('\n')));
    expect(swapped.code).toBe(1);
    expect(swapped.report.broken).toEqual([expect.objectContaining({ line: 5, reason: expect.stringContaining('so rows were moved') })]);

    const fewer = lines(files.jsonl);
    fewer.splice(5, 1);
    const deleted = save('deleted.jsonl', fewer.join('\n'));
    const plain = await verifyJson(deleted);
    // Alone it cannot be told from a filtered export: reported as a gap.
    expect(plain).toMatchObject({ code: 0, report: { gaps: 1 } });
    const complete = await verifyJson(deleted, ['--complete']);
    expect(complete.code).toBe(1);
    expect(complete.report.broken[0].reason).toMatch(/^rows with seq \d+\.\.\d+ are missing before this row/);
  });
});

describe('files that are not a whole export', () => {
  it.each(['jsonl', 'csv'] as const)('%s cut inside its last row: TRUNCATED, exit 5, no row named as modified', async (format) => {
    const text = readFileSync(files[format], 'utf8');
    const cut = save(`cut.${format}`, text.slice(0, text.length - 30));
    const { code, report } = await verifyJson(cut);
    expect(code).toBe(5);
    expect(report).toMatchObject({ broken_rows: 0, rows: exported[format].length - 1, verified_rows: exported[format].length - 1 });
    expect(report.truncated.detail).toMatch(/the download was cut; export again/);
    const res = await verify(['--file', cut]);
    expect(res.stdout).toContain('TRUNCATED (the file ends inside a row)');
  });

  it('garbage, an empty file, a CSV header alone: NOTHING VERIFIED, exit 3; a file that cannot be read: exit 4', async () => {
    for (const [name, text] of [
      ['garbage.txt', 'this is not an export\n\u0000\u0001binary'],
      ['empty.jsonl', ''],
      ['header.csv', `${AUDIT_COLUMN_NAMES.join(',')}\n`],
      ['other.jsonl', '{"a":1}\n{"b":2}\n'],
    ]) {
      const res = await verify(['--file', save(name!, text!)]);
      expect(res.code, `${name}: ${res.stdout}`).toBe(3);
      expect(res.stdout).toContain('NOTHING VERIFIED');
    }
    const missing = await verify(['--file', join(dir, 'nope.jsonl')]);
    expect(missing.code).toBe(4);
    expect(missing.stderr).toMatch(/cannot read the file .*nope\.jsonl: ENOENT/);
  });
});
