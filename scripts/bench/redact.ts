// Micro-benchmark of the audit redactor (src/audit/redact.ts), which runs on every decision's arguments:
// redactValue on typical tool-call arguments, each for ~2 s, in ns per call (the median of
// 10 rounds). Run before and after a change
// to the redactor and compare (docs/performance.md keeps no section for it: the numbers are per machine).
//
//   npx tsx scripts/bench/redact.ts [label] [seconds per case]
//
// Prints a table and writes JSON to bench-results/redact-<label>-<timestamp>.json.

import { mkdir, writeFile } from 'node:fs/promises';
import os from 'node:os';
import { redactValue } from '../../src/audit/redact.js';

const [label = 'run', seconds = '2'] = process.argv.slice(2);

const README = `# Orders service

The service reads orders from Postgres and publishes them to the queue. Run \`npm test\` before a push;
the author of a change reviews the pinned issues first. See docs/ for the API and the deployment notes.
`;

/** Typical arguments of the tools agents call most (files, shell, GitHub, fetch, SQL), and one with secrets. */
const CASES: Record<string, unknown> = {
  read_file: { path: '/home/app/projects/orders/src/service/orders.ts' },
  write_file: { path: 'docs/README.md', content: README.repeat(4) },
  shell: { command: 'git log --oneline -20 && npm run build -- --watch=false', cwd: '/home/app/projects/orders', timeout_ms: 30_000 },
  github_issue: {
    owner: 'acme',
    repo: 'orders',
    title: 'Orders are published twice after a restart',
    body: 'Steps: restart the worker while a batch is in flight. Expected: one message. Seen: two. Logs attached.',
    labels: ['bug', 'p2'],
    assignees: ['jane'],
  },
  fetch: { url: 'https://api.example.com/v1/orders?limit=50&cursor=abc', method: 'GET', headers: { Accept: 'application/json', 'User-Agent': 'agent/1.0' } },
  sql: { query: 'SELECT id, status, created_at FROM orders WHERE customer_id = $1 ORDER BY created_at DESC LIMIT 20', params: [42] },
  edit_file: {
    path: 'src/orders/publish.ts',
    edits: [
      { oldText: 'await queue.publish(order);', newText: 'if (!(await seen(order.id))) await queue.publish(order);' },
      { oldText: 'const retries = 3;', newText: 'const retries = config.retries;' },
    ],
    dryRun: false,
  },
  with_secrets: {
    command: 'curl -H "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9abcdefgh" https://api.example.com',
    env: { DB_PASSWORD: 'hunter2', GITHUB_TOKEN: 'ghp_0123456789abcdefghijABCDEFGHIJ012345', PATH: '/usr/bin' },
    dsn: 'postgres://app:s3cret@db.internal:5432/orders',
  },
};

/** ns per call: the median of 10 rounds of a tenth of `ms` each (the median resists a busy machine). */
function measure(args: unknown, ms: number): { ns_per_op: number; ops: number } {
  let sink = 0;
  // Warm-up: the JIT and the key memo.
  for (let i = 0; i < 2_000; i++) sink += JSON.stringify(redactValue(args)).length & 1;
  const rounds: number[] = [];
  let ops = 0;
  for (let r = 0; r < 10; r++) {
    let n = 0;
    const start = process.hrtime.bigint();
    const end = start + BigInt(Math.round(ms / 10)) * 1_000_000n;
    let now = start;
    while (now < end) {
      for (let i = 0; i < 100; i++) sink += (redactValue(args) as object) === null ? 1 : 0;
      n += 100;
      now = process.hrtime.bigint();
    }
    rounds.push(Number(now - start) / n);
    ops += n;
  }
  if (sink < 0) console.log(sink);
  rounds.sort((a, b) => a - b);
  return { ns_per_op: (rounds[4]! + rounds[5]!) / 2, ops };
}

const results: Array<{ case: string; ns_per_op: number; ops: number }> = [];
for (const [name, args] of Object.entries(CASES)) {
  const r = measure(args, Number(seconds) * 1_000);
  results.push({ case: name, ...r });
}

const typical = results.filter((r) => r.case !== 'with_secrets');
const mean = typical.reduce((s, r) => s + r.ns_per_op, 0) / typical.length;
console.log(`redactValue, ${label} (${seconds} s per case)`);
console.log('case'.padEnd(14), 'ns/op'.padStart(10), 'ops'.padStart(12));
for (const r of results) console.log(r.case.padEnd(14), r.ns_per_op.toFixed(0).padStart(10), String(r.ops).padStart(12));
console.log('typical mean'.padEnd(14), mean.toFixed(0).padStart(10));

await mkdir('bench-results', { recursive: true });
const at = new Date().toISOString();
const file = `bench-results/redact-${label}-${at.replace(/[:.]/g, '-')}.json`;
await writeFile(file, `${JSON.stringify({ bench: 'redact', label, at, machine: { cpus: os.cpus().length, cpu: os.cpus()[0]?.model, node: process.version }, results, typical_mean_ns: mean }, null, 2)}\n`);
console.log(`wrote ${file}`);
