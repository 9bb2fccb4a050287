import { execFile } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join, normalize, resolve } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { parse, stringify } from 'yaml';
import { formatIssue, parsePolicy } from '../../src/policy/index.js';
import { PolicyFileSchema } from '../../src/policy/schema.js';

// What the docs show a reader to copy: policy snippets, routes and `killswitch` options. A review runs them
// by hand against a control plane started as the README says; these checks keep some classes of them
// honest in between, without pinning any prose: a snippet that stops validating, a route renamed under an
// example, an option the CLI no longer has, an alert rule the operations table lacks, a link to a file or
// heading that moved.

const run = promisify(execFile);

/** README.md and every page of docs/ (docs/api.md is generated from the routes themselves). */
const DOCS = [
  'README.md',
  ...readdirSync('docs')
    .filter((f) => f.endsWith('.md'))
    .map((f) => `docs/${f}`),
  ...readdirSync('docs/guide')
    .filter((f) => f.endsWith('.md'))
    .map((f) => `docs/guide/${f}`),
];
const read = (file: string) => readFileSync(file, 'utf8');

/** Fenced ```yaml blocks (also indented ones, in a list), dedented, with the line they start on. */
function yamlBlocks(text: string): Array<{ line: number; source: string }> {
  const out: Array<{ line: number; source: string }> = [];
  for (const m of text.matchAll(/^([ \t]*)```ya?ml[ \t]*\n([\s\S]*?)^\1```/gm)) {
    const indent = m[1]!.length;
    out.push({ line: text.slice(0, m.index).split('\n').length, source: m[2]!.replace(new RegExp(`^[ \\t]{0,${indent}}`, 'gm'), '') });
  }
  return out;
}

/** `b` over `a`: maps merged key by key, anything else (lists, scalars) replaced. */
function merge(a: unknown, b: unknown): unknown {
  const isMap = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
  if (!isMap(a) || !isMap(b)) return b;
  const out: Record<string, unknown> = { ...a };
  for (const [k, v] of Object.entries(b)) out[k] = merge(a[k], v);
  return out;
}

describe('policy snippets in the docs', () => {
  const policyKeys = new Set(Object.keys((PolicyFileSchema as { properties: Record<string, unknown> }).properties));
  const base = parse(read('policy/default.yaml')) as unknown;

  // A snippet is a part of a policy file (no snippet repeats the whole file): it is read as the shipped
  // example with the snippet's keys put in, which is what a reader who pastes it into that file gets.
  it('every ```yaml block whose keys are policy keys validates (errors, not warnings) merged into policy/default.yaml', () => {
    let checked = 0;
    for (const file of DOCS) {
      for (const block of yamlBlocks(read(file))) {
        const snippet = parse(block.source) as unknown;
        if (typeof snippet !== 'object' || snippet === null || Array.isArray(snippet)) continue;
        if (!Object.keys(snippet).every((k) => policyKeys.has(k))) continue; // flags-as-code, Prometheus ...
        checked++;
        const result = parsePolicy(stringify(merge(base, snippet)), `${file}:${block.line}`);
        const errors = result.issues.filter((i) => i.severity === 'error').map(formatIssue);
        expect(errors, `${file}:${block.line}\n${block.source}`).toEqual([]);
        expect(result.ok, `${file}:${block.line}`).toBe(true);
      }
    }
    // docs/policy.md has four (servers, network and paths, roles, approvals): finding none is a broken reader.
    expect(checked).toBeGreaterThanOrEqual(4);
  });
});

describe('routes the docs name', () => {
  const routes = new Set([...read('docs/api.md').matchAll(/^### `([A-Z]+) ([^`]+)`$/gm)].map((m) => `${m[1]} ${m[2]}`));

  /** A placeholder or an example id (`:id`, `<token id>`, `{id}`, `$ID`, `ID`, `0197…`, a UUID) → `{id}`. */
  const normalise = (path: string) =>
    path.replace(/\/(?::[a-z_]+|<[^>\n]*>|\{[a-z_]+\}|\$\{?[A-Za-z_]+\}?|[A-Z][A-Z_]*|[0-9a-f]{4}[^/]*)(?=\/|$)/g, '/{id}');

  /** `GET /v1/keys[/{id}]` and `POST /v1/tools/:id/approve|reject` name two routes each. */
  const expand = (path: string): string[] => {
    const optional = path.match(/^(.*)\[(.*)\](.*)$/);
    if (optional) return [...expand(optional[1]! + optional[3]!), ...expand(optional[1]! + optional[2]! + optional[3]!)];
    const either = path.match(/^(.*\/)([a-z-]+)\|([a-z-]+)$/);
    return either ? [either[1]! + either[2]!, either[1]! + either[3]!] : [path];
  };

  /** `METHOD /path` in the text, and each curl example's method (-X, else POST with -d, else GET) and path. */
  function named(text: string): string[] {
    const joined = text.replace(/\\\n\s*/g, ' ');
    const out: string[] = [];
    for (const m of joined.matchAll(/\b(GET|POST|PUT|DELETE|PATCH) ((?:\/|<[^>\n]*>|[A-Za-z0-9_{}:.$|[\]…-])+)/g)) out.push(`${m[1]} ${m[2]}`);
    for (const line of joined.split('\n')) {
      for (const cmd of line.split(/\bcurl\b/).slice(1)) {
        const path = cmd.match(/(?:\$\{?[A-Z_]+\}?|https?:\/\/[^/ "']+|localhost:\d+)(\/v1\/(?:<[^>\n]*>|[^ "'?`)<])*|\/metrics|\/readyz|\/healthz)/)?.[1];
        if (path) out.push(`${cmd.match(/-X ([A-Z]+)/)?.[1] ?? (/\s-d\s/.test(cmd) ? 'POST' : 'GET')} ${path}`);
      }
    }
    return out;
  }

  it('every METHOD /v1/... and curl example of README.md and docs/ is a route of docs/api.md', () => {
    expect(routes.size).toBeGreaterThan(50);
    const unknown: string[] = [];
    let checked = 0;
    for (const file of DOCS.filter((f) => f !== 'docs/api.md')) {
      for (const mention of named(read(file))) {
        const method = mention.slice(0, mention.indexOf(' '));
        const raw = mention
          .slice(mention.indexOf(' ') + 1)
          .replace(/[.,:;]+$/, '')
          .replace(/…$/, '');
        for (const path of expand(raw)) {
          if (!path.startsWith('/v1/') && !['/metrics', '/readyz', '/healthz'].includes(path)) continue;
          checked++;
          const route = `${method} ${normalise(path)}`;
          if (!routes.has(route)) unknown.push(`${file}: ${mention} (read as ${route})`);
        }
      }
    }
    expect(unknown).toEqual([]);
    expect(checked).toBeGreaterThan(100);
  });
});

describe('request bodies of the curl examples', () => {
  /** Per route of docs/api.md, the fields its request body table lists (none: the route takes no body). */
  const fields = new Map<string, { known: Set<string>; required: string[] }>();
  for (const section of read('docs/api.md').split(/^(?=### `)/m)) {
    const head = section.match(/^### `([A-Z]+) ([^`]+)`/);
    if (!head) continue;
    const table = section.split(/^Request body.*$/m)[1]?.split(/^Responses/m)[0] ?? '';
    const rows = [...table.matchAll(/^\| `([a-z_]+)` \|[^|]*(?:\\\|[^|]*)*\|\s*(yes)?\s*\|/gm)];
    fields.set(`${head[1]} ${head[2]}`, { known: new Set(rows.map((r) => r[1]!)), required: rows.filter((r) => r[2]).map((r) => r[1]!) });
  }

  /**
   * The JSON a shell makes of `-d '{"a":"'"$(date)"'","b":<count>}'`: quoted pieces joined, a shell
   * expansion (`$VAR`, `"$(...)"`) and a bare `<placeholder>` read as a value of the right kind.
   */
  function body(arg: string): unknown {
    let json = '';
    for (const piece of arg.matchAll(/'([^']*)'|"[^"]*"|\$[A-Za-z_]+/g)) json += piece[1] ?? 'x';
    return JSON.parse(json.replace(/:\s*<[^>]*>/g, ':0'));
  }

  it('every curl example with -d sends valid JSON whose fields are those of its route (docs/api.md), the required ones included', () => {
    const normalise = (path: string) =>
      path.replace(/\/(?::[a-z_]+|<[^>\n]*>|\{[a-z_]+\}|\$\{?[A-Za-z_]+\}?|[A-Z][A-Z_]*|[0-9a-f]{4}[^/]*)(?=\/|$)/g, '/{id}');
    const wrong: string[] = [];
    let checked = 0;
    for (const file of DOCS.filter((f) => f !== 'docs/api.md')) {
      for (const line of read(file).replace(/\\\n\s*/g, ' ').split('\n')) {
        for (const cmd of line.split(/\bcurl\b/).slice(1)) {
          const data = cmd.match(/\s-d ((?:'[^']*'|"[^"]*"|\$[A-Za-z_]+)+)/)?.[1];
          const path = cmd.match(/(?:\$\{?[A-Z_]+\}?|https?:\/\/[^/ "']+|localhost:\d+)(\/v1\/(?:<[^>\n]*>|[^ "'?`)<])*)/)?.[1];
          if (!data || !path) continue;
          const route = `${cmd.match(/-X ([A-Z]+)/)?.[1] ?? 'POST'} ${normalise(path.replace(/[.,:;]+$/, ''))}`;
          const spec = fields.get(route);
          checked++;
          let sent: unknown;
          try {
            sent = body(data);
          } catch (err) {
            wrong.push(`${file}: ${route}: the body is not JSON (${(err as Error).message}): ${data}`);
            continue;
          }
          if (!spec) {
            wrong.push(`${file}: ${route} is not a route of docs/api.md`);
            continue;
          }
          const keys = Object.keys(sent as object);
          for (const k of keys) if (!spec.known.has(k)) wrong.push(`${file}: ${route}: field ${k} is not in its request body`);
          for (const k of spec.required) if (!keys.includes(k)) wrong.push(`${file}: ${route}: required field ${k} is missing`);
        }
      }
    }
    expect(wrong).toEqual([]);
    expect(checked).toBeGreaterThan(20);
  });
});

describe('killswitch options the docs give', () => {
  const cli = async (args: string[]) => (await run('node', [resolve('bin/killswitch.js'), ...args], { timeout: 30_000 })).stdout;
  /** The subcommands a help text lists under "Commands:" (not `help`). */
  const commandsOf = (help: string) =>
    [...(help.split(/^Commands:$/m)[1] ?? '').matchAll(/^ {2}([a-z][a-z-]*)/gm)].map((m) => m[1]!).filter((c) => c !== 'help');

  it('every --option written after `killswitch <command>` in README.md and docs/ is one that command lists in its --help', async () => {
    const top = commandsOf(await cli(['--help']));
    expect(top).toContain('kill');
    // The help texts are read at once (each a process start): one after another they took ~16 s of the suite.
    const subs = new Map(await Promise.all(top.map(async (c) => [c, commandsOf(await cli([c, '--help']))] as const)));
    expect(subs.get('audit')).toContain('verify');

    // `killswitch kill --server x --reason "..."`, up to the end of its code span or line, a pipe, a
    // redirection, a comment or `;`/`&&`: prose around it (`killswitch kill` without `--reason`) is not read.
    const uses = new Map<string, Set<string>>();
    for (const file of DOCS) {
      const text = read(file).replace(/\\\n\s*/g, ' ');
      for (const m of text.matchAll(/\bkillswitch(?:\.js)? ([a-z][a-z-]*)(?: ([a-z][a-z-]*))?([^`\n|;&#>)]*)/g)) {
        const [, first, second, rest] = m as unknown as [string, string, string | undefined, string];
        if (!top.includes(first)) continue;
        const isSub = second !== undefined && (subs.get(first) ?? []).includes(second);
        const path = isSub ? `${first} ${second}` : first;
        const options = `${isSub ? '' : (second ?? '')} ${rest}`.match(/(?<=^|\s)--[a-z][a-z-]*/g) ?? [];
        for (const o of options) uses.set(path, (uses.get(path) ?? new Set()).add(`${o}\t${file}`));
      }
    }
    expect(uses.get('kill')?.size).toBeGreaterThan(5);
    const missing: string[] = [];
    const helps = new Map(await Promise.all([...uses.keys()].map(async (path) => [path, await cli([...path.split(' '), '--help'])] as const)));
    for (const [path, options] of uses) {
      const help = helps.get(path)!;
      for (const entry of options) {
        const [option, file] = entry.split('\t') as [string, string];
        if (!new RegExp(`(^|[ ,])${option}(?=[ ,<[=]|$)`, 'm').test(help)) missing.push(`${file}: killswitch ${path} ${option}`);
      }
    }
    expect(missing).toEqual([]);
  }, 120_000);
});

describe('the sample Prometheus alert rules', () => {
  it('are each in the table of docs/operations.md, "Alert rules", and the table names none that deploy/prometheus/alerts.yml lacks', () => {
    const doc = parse(read('deploy/prometheus/alerts.yml')) as { groups: Array<{ rules: Array<{ alert: string }> }> };
    const rules = new Set(doc.groups.flatMap((g) => g.rules.map((r) => r.alert)));
    expect(rules.size).toBeGreaterThan(10);
    const text = read('docs/operations.md');
    const section = text.slice(text.indexOf('## 4. Alert rules'), text.indexOf('\n## 5.'));
    // A row's first cell names one rule or several that share the prefix: `KillswitchRedisDown / RedisErrors`.
    const documented = new Set(
      section
        .split('\n')
        .filter((l) => l.startsWith('| Killswitch'))
        .flatMap((l) => (l.split('|')[1] ?? '').split('/').map((n) => n.trim().replace(/^(?!Killswitch)/, 'Killswitch'))),
    );
    expect([...rules].filter((r) => !documented.has(r))).toEqual([]);
    expect([...documented].filter((r) => !rules.has(r))).toEqual([]);
  });
});

describe('links between the pages', () => {
  /** GitHub's heading anchors: lower case, punctuation dropped, each space a hyphen; repeats get -1, -2. */
  const anchorsOf = (file: string): Set<string> => {
    const text = read(file).replace(/```[\s\S]*?```/g, '');
    const seen = new Map<string, number>();
    const anchors = new Set<string>();
    for (const m of text.matchAll(/^#{1,6} (.+)$/gm)) {
      const slug = m[1]!
        .trim()
        .toLowerCase()
        .replace(/[^\p{L}\p{N}\s_-]/gu, '')
        .replace(/\s/g, '-');
      const n = seen.get(slug) ?? 0;
      seen.set(slug, n + 1);
      anchors.add(n === 0 ? slug : `${slug}-${n}`);
    }
    return anchors;
  };

  it('every relative link of README.md, docs/ and docs/adr/ goes to a file that exists, and its #anchor to a heading of it', () => {
    const pages = [...DOCS, ...readdirSync('docs/adr').filter((f) => f.endsWith('.md')).map((f) => `docs/adr/${f}`)];
    const broken: string[] = [];
    let checked = 0;
    for (const file of pages) {
      for (const m of read(file).replace(/```[\s\S]*?```/g, '').matchAll(/\]\(([^)\s]+)\)/g)) {
        const url = m[1]!;
        if (/^[a-z]+:/.test(url)) continue;
        const [path = '', anchor] = url.split('#');
        const target = path === '' ? file : normalize(join(dirname(file), path));
        checked++;
        if (!existsSync(target)) broken.push(`${file}: ${url} (no such file)`);
        else if (anchor && target.endsWith('.md') && !anchorsOf(target).has(decodeURIComponent(anchor))) broken.push(`${file}: ${url} (no such heading)`);
      }
    }
    expect(checked).toBeGreaterThan(100);
    expect(broken).toEqual([]);
  });
});
