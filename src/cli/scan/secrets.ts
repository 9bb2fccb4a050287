// The password of scheme://user:PASSWORD@host exactly as the audit trail reads it: it may hold '/' and '@'
// and runs to the last '@' before the host; a port followed by a path is not a password.
import { URL_PASSWORD } from '../../audit/redact.js';
import type { ConfiguredServer, JsonPath } from './parse.js';

// Plaintext credentials in a server's env, args, url or headers (seed 002: "servers storing
// credentials in plain text"). What is found is never printed: each secret is kept as its place (the
// field it is in and its span there), and everything shown is built from fields whose found spans are
// masked. Masking by span, not by searching the output for the secret's text: a short secret ("p")
// would otherwise mask every "p" printed, and any text the search missed would stay in clear.

export interface Span {
  start: number;
  end: number;
}

export interface FoundSecret {
  /** The field it is in, relative to the server's entry (`['env', 'GITHUB_TOKEN']`, `['args', 3]`, `['url']`). */
  at: JsonPath;
  /** Where it is in that field's string (more than one when the same value is there twice). */
  spans: Span[];
  /** `env GITHUB_TOKEN`, `args[3]`, `url`, `headers.Authorization`. */
  label: string;
  /** Why it counts: `GitHub token`, `value of a secret-named variable`, `password in a connection string`. */
  reason: string;
  /** The text it was found in (`KEY=value`, the argument, the url) with every found secret masked. */
  evidence: string;
}

/** At most the first 4 characters, and only of secrets long enough that 4 characters say little. */
export function maskSecret(secret: string): string {
  return `${secret.length >= 16 ? secret.slice(0, 4) : ''}****`;
}

const KNOWN_TOKENS: { name: string; re: RegExp }[] = [
  { name: 'GitHub token', re: /\b(gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{22,})/g },
  { name: 'GitLab token', re: /\bglpat-[A-Za-z0-9_-]{20,}/g },
  { name: 'API key (sk-)', re: /\bsk-[A-Za-z0-9_-]{20,}/g },
  { name: 'Stripe key', re: /\b[rs]k_(live|test)_[A-Za-z0-9]{16,}/g },
  { name: 'Slack token', re: /\bxox[abeoprs]-[A-Za-z0-9-]{10,}/g },
  { name: 'AWS access key id', re: /\b(AKIA|ASIA)[0-9A-Z]{16}\b/g },
  { name: 'Google API key', re: /\bAIza[0-9A-Za-z_-]{35}/g },
  { name: 'MCP kill switch credential', re: /\b(mcp_(ro|rw|admin)_|ksgw_|ksop_)[0-9A-Za-z]{20,}/g },
  { name: 'JSON web token', re: /\beyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}/g },
  { name: 'private key', re: /-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(-----END [A-Z ]*PRIVATE KEY-----|$)/g },
];

const SECRET_NAME = /(^|_)(TOKEN|SECRET|PASSWORD|PASSWD|API_?KEY|ACCESS_?KEY|PRIVATE_?KEY|SECRET_?KEY|CREDENTIALS?|AUTHORIZATION|AUTH|PAT|COOKIE)$/;
const QUERY_PARAM = /[?&]([A-Za-z0-9_.-]+)=([^&#\s]+)/g;
const ASSIGNMENT = /^([A-Za-z_][A-Za-z0-9_]*)=(.+)$/s;
const AUTH_SCHEME = /^(Bearer|Basic|Token|Bot)\s+/i;

/** `--api-key`, `apiKey`, `X-Api-Key` and `GITHUB_TOKEN` all become `..._API_KEY` / `..._TOKEN`. */
export function isSecretName(name: string): boolean {
  const norm = name
    .replace(/^-+/, '')
    .replace(/([a-z0-9])([A-Z])/g, '$1_$2')
    .toUpperCase()
    .replace(/[^A-Z0-9]+/g, '_');
  return SECRET_NAME.test(norm);
}

/** `${VAR}`, `${input:token}`, `$VAR`, `%VAR%`, `{{secret}}` and secret-manager URIs are references, not secrets. */
function isReference(value: string): boolean {
  return /\$\{[^}]+\}|\{\{[^}]+\}\}/.test(value) || /^\$[A-Za-z_][A-Za-z0-9_]*$/.test(value) || /^%[A-Za-z_][A-Za-z0-9_]*%$/.test(value) || /^(op|vault|keychain|secret|env):/i.test(value);
}

function isPlaceholder(value: string): boolean {
  return (
    /^<[^>]*>$/.test(value) ||
    /^(your|my|insert|enter|replace)[-_ ]/i.test(value) ||
    /[-_ ]here$/i.test(value) ||
    /^(x+|\*+|\.+|changeme|change-me|placeholder|redacted|example|todo|none|null|undefined|true|false|required|optional)$/i.test(value) ||
    // Switches, not credentials: DISABLE_AUTH=1, --auth=off.
    /^([01]|yes|no|on|off|enabled?|disabled?)$/i.test(value)
  );
}

function looksLikePath(value: string): boolean {
  return /^(\/|~[/\\]?|\.{1,2}[/\\]|[A-Za-z]:[\\/])/.test(value);
}

function plausible(value: string): boolean {
  const v = value.trim();
  return v.length > 0 && !isReference(v) && !isPlaceholder(v);
}

/** What the scan shows of a server: its fields with the found secrets masked. */
type Shown = Pick<ConfiguredServer, 'command' | 'args' | 'url' | 'env' | 'headers'>;

interface Found {
  at: JsonPath;
  spans: Span[];
  label: string;
  reason: string;
  value: string;
  evidence: (shown: Shown) => string;
}

class SecretCollector {
  readonly found: Found[] = [];

  /** `field.slice(start, end)` is a secret; the same value reported twice under one label is one finding. */
  add(field: string, start: number, end: number, at: JsonPath, label: string, reason: string, evidence: (shown: Shown) => string): void {
    const value = field.slice(start, end);
    if (!plausible(value)) return;
    const same = this.found.find((f) => f.value === value && f.label === label);
    if (same) {
      if (!same.spans.some((s) => s.start === start && s.end === end)) same.spans.push({ start, end });
      return;
    }
    this.found.push({ at, spans: [{ start, end }], label, reason, value, evidence });
  }

  /** Known token formats, passwords in connection strings and secret-named query parameters. */
  scanText(text: string, at: JsonPath, label: string, evidence: (shown: Shown) => string): void {
    for (const { name, re } of KNOWN_TOKENS) for (const m of text.matchAll(re)) this.add(text, m.index, m.index + m[0].length, at, label, name, evidence);
    for (const m of text.matchAll(URL_PASSWORD)) {
      const [, head = '', password = ''] = m;
      const start = m.index + head.length;
      this.add(text, start, start + password.length, at, label, 'password in a connection string or URL', evidence);
    }
    for (const m of text.matchAll(QUERY_PARAM)) {
      const [whole, name = '', value = ''] = m;
      if (isSecretName(name) || /^(key|sig|signature)$/i.test(name)) {
        const end = m.index + whole.length;
        this.add(text, end - value.length, end, at, label, `secret-named URL parameter ${name}`, evidence);
      }
    }
  }

  /** The value from `field[from]` on is stored under a secret-looking name: all of it is the secret, however short. */
  named(name: string, field: string, from: number, at: JsonPath, label: string, evidence: (shown: Shown) => string): void {
    const raw = field.slice(from);
    const trimmed = raw.trim();
    const scheme = AUTH_SCHEME.exec(trimmed)?.[0].length ?? 0;
    const v = trimmed.slice(scheme);
    if (looksLikePath(v) || /^[a-z][a-z0-9+.-]*:\/\//i.test(v)) return;
    const start = from + (raw.length - raw.trimStart().length) + scheme;
    this.add(field, start, start + v.length, at, label, `value of the secret-named ${name}`, evidence);
  }
}

function pathKey(at: JsonPath): string {
  return JSON.stringify(at);
}

/** `text` with each span masked (overlapping ones as one). Spans may run past the text's ends: the part inside is then `****`. */
function maskSpans(text: string, spans: readonly Span[]): string {
  const merged: Span[] = [];
  for (const s of [...spans].sort((a, b) => a.start - b.start)) {
    const last = merged.at(-1);
    if (last && s.start < last.end) last.end = Math.max(last.end, s.end);
    else merged.push({ ...s });
  }
  let out = '';
  let pos = 0;
  for (const s of merged) {
    const start = Math.max(s.start, 0);
    const end = Math.min(s.end, text.length);
    if (end <= start) continue;
    out += text.slice(pos, start) + (start === s.start && end === s.end ? maskSecret(text.slice(start, end)) : '****');
    pos = end;
  }
  return out + text.slice(pos);
}

function spansByField(found: readonly FoundSecret[]): Map<string, Span[]> {
  const out = new Map<string, Span[]>();
  for (const f of found) {
    const key = pathKey(f.at);
    out.set(key, [...(out.get(key) ?? []), ...f.spans]);
  }
  return out;
}

function maskFields(server: Shown, found: readonly FoundSecret[]): Shown {
  const spans = spansByField(found);
  const mask = (at: JsonPath, text: string) => {
    const s = spans.get(pathKey(at));
    return s ? maskSpans(text, s) : text;
  };
  const maskRecord = (kind: string, r: Record<string, string>) => Object.fromEntries(Object.entries(r).map(([k, v]) => [k, mask([kind, k], v)]));
  return {
    command: server.command === undefined ? undefined : mask(['command'], server.command),
    args: server.args.map((a, i) => mask(['args', i], a)),
    url: server.url === undefined ? undefined : mask(['url'], server.url),
    env: maskRecord('env', server.env),
    headers: maskRecord('headers', server.headers),
  };
}

/** The server as the scan shows it: command, args, url, env and header values with the found secrets masked. */
export function redactServer(server: ConfiguredServer, found: readonly FoundSecret[]): ConfiguredServer {
  return { ...server, ...maskFields(server, found) };
}

function fieldAt(server: Shown, at: JsonPath): string | undefined {
  const [kind, key] = at;
  if (kind === 'args' && typeof key === 'number') return server.args[key];
  if ((kind === 'env' || kind === 'headers') && typeof key === 'string') return Object.hasOwn(server[kind], key) ? server[kind][key] : undefined;
  if (kind === 'url') return server.url;
  if (kind === 'command') return server.command;
  return undefined;
}

/** The spans of `field` seen from each occurrence of `piece` in it; undefined when `piece` is not in it. */
function spansOfPiece(field: string, spans: readonly Span[], piece: string): Span[] | undefined {
  if (!field.includes(piece)) return undefined;
  const out: Span[] = [];
  for (let i = field.indexOf(piece); i >= 0; i = field.indexOf(piece, i + 1)) for (const s of spans) out.push({ start: s.start - i, end: s.end - i });
  return out;
}

/**
 * `part`, a piece of the field at `at` (the path after `--dir=`, one entry of a list, a mount source), with
 * that field's secrets masked. Where the piece occurs more than once, what is secret at any occurrence is
 * masked; a piece that is not in the field is shown as `****`.
 */
export function redactPart(server: ConfiguredServer, found: readonly FoundSecret[], at: JsonPath, part: string): string {
  const spans = spansByField(found).get(pathKey(at));
  if (!spans || part === '') return part;
  const relative = spansOfPiece(fieldAt(server, at) ?? '', spans, part);
  return relative ? maskSpans(part, relative) : '****';
}

/**
 * A host or database name read from the server's fields (lower-cased, as src/policy/resources.ts reads
 * them), with what overlaps a secret masked: a connection string is read in every way a client may read
 * it, and one of those readings can take part of a password for a host (`user:pa/ss@db` → `ss@db`).
 * A name found in no field of a server that has secrets is shown as `****`.
 */
export function redactIdentity(server: ConfiguredServer, found: readonly FoundSecret[], identity: string): string {
  if (found.length === 0 || identity === '') return identity;
  const byField = spansByField(found);
  const fields: [JsonPath, string | undefined][] = [
    [['command'], server.command],
    [['url'], server.url],
    ...server.args.map((a, i): [JsonPath, string] => [['args', i], a]),
    ...Object.entries(server.env).map(([k, v]): [JsonPath, string] => [['env', k], v]),
    ...Object.entries(server.headers).map(([k, v]): [JsonPath, string] => [['headers', k], v]),
  ];
  const relative: Span[] = [];
  let seen = false;
  for (const [at, field] of fields) {
    const lower = field?.toLowerCase();
    if (lower === undefined || lower.length !== field?.length) continue;
    const spans = spansOfPiece(lower, byField.get(pathKey(at)) ?? [], identity);
    if (spans) {
      seen = true;
      relative.push(...spans);
    }
  }
  return seen ? maskSpans(identity, relative) : '****';
}

/** Every plaintext credential in one configured server. */
export function findSecrets(server: ConfiguredServer): FoundSecret[] {
  const c = new SecretCollector();
  for (const [key, value] of Object.entries(server.env)) {
    const at = ['env', key];
    const label = `env ${key}`;
    const evidence = (s: Shown) => `${key}=${s.env[key]}`;
    if (isSecretName(key)) c.named(key, value, 0, at, label, evidence);
    c.scanText(value, at, label, evidence);
  }
  for (const [key, value] of Object.entries(server.headers)) {
    const at = ['headers', key];
    const label = `headers.${key}`;
    const evidence = (s: Shown) => `${key}: ${s.headers[key]}`;
    if (isSecretName(key)) c.named(key, value, 0, at, label, evidence);
    c.scanText(value, at, label, evidence);
  }
  server.args.forEach((arg, i) => {
    const at = ['args', i];
    const label = `args[${i}]`;
    const evidence = (s: Shown) => s.args[i] ?? '';
    c.scanText(arg, at, label, evidence);
    const flag = /^(--?[A-Za-z][A-Za-z0-9_-]*)=(.*)$/s.exec(arg);
    if (flag?.[1] && flag[2] !== undefined && isSecretName(flag[1])) c.named(flag[1], arg, flag[1].length + 1, at, label, evidence);
    const assignment = ASSIGNMENT.exec(arg);
    if (assignment?.[1] && assignment[2] && isSecretName(assignment[1])) c.named(assignment[1], arg, assignment[1].length + 1, at, label, evidence);
    const next = server.args[i + 1];
    if (/^--?[A-Za-z][A-Za-z0-9_-]*$/.test(arg) && isSecretName(arg) && next !== undefined && !next.startsWith('-')) {
      c.named(arg, next, 0, ['args', i + 1], `args[${i + 1}]`, (s) => `${s.args[i] ?? ''} ${s.args[i + 1] ?? ''}`);
    }
  });
  if (server.url) c.scanText(server.url, ['url'], 'url', (s) => s.url ?? '');
  if (server.command) c.scanText(server.command, ['command'], 'command', (s) => s.command ?? '');
  const found: FoundSecret[] = c.found.map(({ at, spans, label, reason }) => ({ at, spans, label, reason, evidence: '' }));
  const shown = maskFields(server, found);
  return found.map((f, i) => ({ ...f, evidence: c.found[i]?.evidence(shown) ?? '' }));
}
