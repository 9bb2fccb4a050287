// What a platform team's policy file does to the control plane: 300 MCP servers with tool maps of
// 50–200 tools, 150 roles over the three environments, long lists of prohibited capabilities,
// forbidden patterns and approval rules, per-server limits. Generates such a file (deterministic),
// then measures, in this process:
//   - parse + validate + compile time and the heap the compiled policy holds;
//   - a hot reload through PolicyStore (rename over the file), twice (the first starts the parser thread):
//     how long until it is in force, and the longest the event loop was blocked meanwhile (decisions wait
//     that long);
//   - `killswitch policy check` on the file with one mistake deep inside: time and its message;
//   - the policy steps of one decision (resolve, rules, scopes, approval rule, limits) for a call on the
//     first server/tool/role of the file and one on the last: anything linear on the decision path
//     shows as a gap between the two.
//
//   npx tsx scripts/bench/policy-scale.ts [--servers 300] [--roles 150] [--label run] [--keep DIR] [--reload-only]
//
// Prints a table and writes JSON to bench-results/policy-scale-<label>-<timestamp>.json.

import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import { join } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { parseArgs, promisify } from 'node:util';
import pino from 'pino';
import { approvalRuleFor } from '../../src/approvals/rules.js';
import type { DecisionInput } from '../../src/decisions/types.js';
import { checkPolicy, limitsFor, loadPolicyFile, PolicyStore, parsePolicy, resolveCall, scopeCheck } from '../../src/policy/index.js';
import type { CompiledPolicy } from '../../src/policy/types.js';
import { declaredServerWarnings } from '../../src/sessions/declared-servers.js';
import type { AgentPrincipal } from '../../src/tokens/authenticator.js';
import { CLASSES, generatePolicy, roleName, serverName, toolName, toolsOf } from './policy-gen.js';

const { values: args } = parseArgs({
  options: {
    servers: { type: 'string', default: '300' },
    roles: { type: 'string', default: '150' },
    label: { type: 'string', default: 'run' },
    keep: { type: 'string' },
    // Only the hot reload (and the load it needs): for before/after runs of it, alternated.
    'reload-only': { type: 'boolean', default: false },
  },
});
const SERVERS = Number(args.servers);
const ROLES = Number(args.roles);
function agentFor(role: string): AgentPrincipal {
  return {
    kind: 'agent',
    id: 'tok-bench',
    tokenType: 'rw',
    scopes: Object.values(CLASSES).flat(),
    role,
    projectId: 'bench',
    environment: 'staging',
    displayPrefix: 'mcp_rw_bench',
    expiresAt: null,
  };
}

/** ns per call of fn: the median of 7 rounds of `n` calls each. */
function nsPer(fn: () => unknown, n = 20_000): number {
  let sink = 0;
  for (let i = 0; i < 2_000; i++) sink += fn() === undefined ? 0 : 1;
  const rounds: number[] = [];
  for (let r = 0; r < 7; r++) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < n; i++) sink += fn() === undefined ? 0 : 1;
    rounds.push(Number(process.hrtime.bigint() - t0) / n);
  }
  if (sink < 0) console.log(sink);
  rounds.sort((a, b) => a - b);
  return Math.round(rounds[3] as number);
}

function decisionCosts(policy: CompiledPolicy, server: string, tool: string, role: string) {
  const input: DecisionInput = { server, tool, arguments: { id: 42 }, session_id: 'sess-bench', environment: 'staging' };
  const agent = agentFor(role);
  const resolved = resolveCall(policy, input);
  if ('denial' in resolved) throw new Error(`resolve denied ${server}/${tool}: ${resolved.denial.message}`);
  const call = resolved.call;
  const denial = checkPolicy(policy, agent, call, input, { production: false });
  if (denial) throw new Error(`policy denied ${server}/${tool} for ${role}: ${denial.message}`);
  return {
    'policy-resolve': nsPer(() => resolveCall(policy, input)),
    'policy-rules': nsPer(() => checkPolicy(policy, agent, call, input, { production: false })),
    scopes: nsPer(() => scopeCheck(agent, call)),
    'approval rule': nsPer(() => approvalRuleFor(policy, agent, call)),
    limits: nsPer(() => limitsFor(policy, role, server)),
  };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] as number;
}

async function main(): Promise<void> {
  const dir = args.keep ?? (await mkdtemp(join(os.tmpdir(), 'policy-scale-')));
  await mkdir(dir, { recursive: true });
  const text = generatePolicy(SERVERS, ROLES);
  const file = join(dir, 'policy.yaml');
  await writeFile(file, text);
  const bytes = Buffer.byteLength(text);
  const lines = text.split('\n').length - 1;
  const tools = Array.from({ length: SERVERS }, (_, i) => toolsOf(i)).reduce((a, b) => a + b, 0);
  console.log(`policy: ${SERVERS} servers, ${tools} tools, ${ROLES} roles, ${lines} lines, ${(bytes / 1024).toFixed(0)} KiB (${file})`);

  const loaded = await loadPolicyFile(file);
  const results: Record<string, unknown> = { servers: SERVERS, roles: ROLES, tools, lines, bytes };
  if (!loaded.ok) {
    console.log(`loadPolicyFile refuses it: ${loaded.issues.map((i) => i.message).join('; ')}`);
    results['load_refused'] = loaded.issues.map((i) => i.message);
  }

  if (!args['reload-only']) await measureParseAndDecisions(text, file, dir, results);

  // Hot reload: rename a changed file over the watched one; the event loop's longest stall meanwhile.
  if (!loaded.ok) {
    console.log('\nhot reload: not measured (the file is refused; try --servers 150)');
    return finish(dir, results);
  }
  // Twice: the first reload of a process starts the parser thread (src/policy/parse-thread.ts), the second
  // finds it running.
  const store = await PolicyStore.open(file, { log: pino({ level: 'silent' }), debounceMs: 10, settleMs: 50 });
  const reloads: Record<string, number>[] = [];
  for (const label of ['reloaded', 'reloaded again']) {
    const next = join(dir, 'next.yaml');
    await writeFile(next, text.replace('description: generated by', `description: ${label}, generated by`));
    const before = store.current().hash;
    const lag = monitorEventLoopDelay({ resolution: 1 });
    let longest = 0;
    let prev = performance.now();
    const ticker = setInterval(() => {
      const now = performance.now();
      longest = Math.max(longest, now - prev);
      prev = now;
    }, 1);
    lag.enable();
    const r0 = performance.now();
    await rename(next, file);
    while (store.current().hash === before && performance.now() - r0 < 30_000) await new Promise((r) => setTimeout(r, 2));
    const reloadMs = Math.round(performance.now() - r0);
    // The tick after the swap: a stall that ended with it is counted.
    await new Promise((r) => setTimeout(r, 5));
    lag.disable();
    clearInterval(ticker);
    reloads.push({ ms_until_in_force: reloadMs, settle_ms: 50, longest_event_loop_stall_ms: Math.round(longest), event_loop_delay_max_ms: Math.round(lag.max / 1e6) });
    console.log(`\nhot reload (${label}): in force ${reloadMs} ms after the rename (settle 50 ms); longest event-loop stall ${Math.round(longest)} ms (decisions wait that long)`);
  }
  await store.close();
  results['reload'] = reloads[0];
  results['reload_again'] = reloads[1];
  await finish(dir, results);
}

/** Parse time and heap, the policy steps of a decision, a session open, `killswitch policy check`. */
async function measureParseAndDecisions(text: string, file: string, dir: string, results: Record<string, unknown>): Promise<void> {
  // Parse + validate + compile, from the text (the size cap is the reader's, not the parser's).
  const parseMs: number[] = [];
  for (let r = 0; r < 5; r++) {
    const t0 = performance.now();
    const res = parsePolicy(text, file);
    parseMs.push(performance.now() - t0);
    if (!res.ok) throw new Error(`generated policy invalid: ${res.issues.slice(0, 3).map((i) => `${i.line}:${i.column} ${i.path}: ${i.message}`).join('; ')}`);
  }
  global.gc?.();
  const heapBefore = process.memoryUsage().heapUsed;
  const kept = parsePolicy(text, file);
  global.gc?.();
  const heapAfter = process.memoryUsage().heapUsed;
  if (!kept.ok) throw new Error('invalid');
  const policy = kept.policy;
  results['parse_ms_median'] = Math.round(median(parseMs));
  results['parse_ms'] = parseMs.map((m) => Math.round(m));
  results['compiled_heap_mb'] = global.gc ? Number(((heapAfter - heapBefore) / 1e6).toFixed(1)) : null;
  console.log(`parse+validate+compile: median ${results['parse_ms_median']} ms (${(results['parse_ms'] as number[]).join(', ')}); compiled policy holds ${results['compiled_heap_mb'] ?? '? (run with --expose-gc)'} MB`);

  // Decision steps: first server/tool/role of the file vs the last.
  const lastServer = serverName(SERVERS - 1);
  const first = decisionCosts(policy, serverName(0), toolName(0), roleName(0));
  const last = decisionCosts(policy, lastServer, toolName(toolsOf(SERVERS - 1) - 1), roleName(ROLES - 1));
  results['decision_ns'] = { first, last };
  console.log('\n| policy step (ns per call) | first server/tool/role | last |\n|---|---|---|');
  for (const k of Object.keys(first)) console.log(`| ${k} | ${first[k as keyof typeof first]} | ${last[k as keyof typeof last]} |`);

  // Opening a session that declares 50 servers (a gateway declares every server of its config), most
  // of which the role may not use: each is checked as a call to it would be.
  const declared = Array.from({ length: Math.min(50, SERVERS) }, (_, k) => serverName(SERVERS - 1 - k));
  const who = agentFor(roleName(0));
  const t1 = performance.now();
  let refused = 0;
  for (let i = 0; i < 20; i++) refused = declaredServerWarnings(policy, who, declared).length;
  const declaredMs = (performance.now() - t1) / 20;
  results['session_open_declared_50_ms'] = Number(declaredMs.toFixed(2));
  console.log(`\nsession open declaring 50 servers (${refused} refused to the role): ${declaredMs.toFixed(2)} ms of policy checks`);

  // `killswitch policy check` on the file with one mistake deep inside (the last role's last list).
  const broken = join(dir, 'broken.yaml');
  await writeFile(broken, generatePolicy(SERVERS, ROLES, true));
  const t0 = performance.now();
  const check = await promisify(execFile)(process.execPath, [join(import.meta.dirname, '../../bin/killswitch.js'), 'policy', 'check', broken]).then(
    (r) => ({ code: 0, stderr: r.stderr }),
    (e: { code: number; stderr: string }) => ({ code: e.code, stderr: e.stderr }),
  );
  const checkMs = Math.round(performance.now() - t0);
  const firstLine = check.stderr.split('\n')[0] ?? '';
  results['policy_check'] = { ms: checkMs, exit: check.code, first_line: firstLine.slice(0, 300), bytes_of_stderr: check.stderr.length };
  console.log(`\nkillswitch policy check (one mistake at the end): exit ${check.code} in ${checkMs} ms (process start included)\n  ${firstLine.slice(0, 300)}${firstLine.length > 300 ? '…' : ''}`);
}

async function finish(dir: string, results: Record<string, unknown>): Promise<void> {

  if (!args.keep) await rm(dir, { recursive: true, force: true });
  const out = join(import.meta.dirname, '../../bench-results', `policy-scale-${args.label}-${new Date().toISOString().replaceAll(':', '-').replaceAll('.', '-')}.json`);
  await mkdir(join(import.meta.dirname, '../../bench-results'), { recursive: true });
  await writeFile(out, `${JSON.stringify({ node: process.version, cpus: os.cpus().length, ...results }, null, 2)}\n`);
  console.log(`\nwritten ${out}`);
}

if (process.argv[1] && import.meta.filename === process.argv[1]) await main();
