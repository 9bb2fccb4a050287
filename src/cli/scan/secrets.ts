import type { ConfiguredServer, JsonPath } from './parse.js';

// Plaintext credentials in a server's env, args, url or headers (seed 002: "servers storing
// credentials in plain text"). What is found is never printed: every string shown to the operator
// goes through redact(), which replaces each found secret by its mask.

export interface FoundSecret {
  /** The secret exactly as it appears in the config: never print it. */
  value: string;
  /** Where, relative to the server's entry. */
  at: JsonPath;
  /** The whole string it was found in (to show, redacted, as evidence). */
  source: string;
  /** `env GITHUB_TOKEN`, `args[3]`, `url`, `headers.Authorization`. */
  label: string;
  /** Why it counts: `GitHub token`, `value of a secret-named variable`, `password in a connection string`. */
  reason: string;
}

/** At most the first 4 characters, and only of secrets long enough that 4 characters say little. */
export function maskSecret(secret: string): string {
  return `${secret.length >= 16 ? secret.slice(0, 4) : ''}****`;
}

/** Replaces every occurrence of every secret by its mask (longest first, so overlaps stay hidden). */
export function redact(text: string, secrets: readonly string[]): string {
  let out = text;
  for (const s of [...secrets].sort((a, b) => b.length - a.length)) if (s) out = out.replaceAll(s, maskSecret(s));
  return out;
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
const URL_PASSWORD = /[a-z][a-z0-9+.-]*:\/\/[^:@/\s]*:([^@/\s]+)@/gi;
const QUERY_PARAM = /[?&]([A-Za-z0-9_.-]+)=([^&#\s]+)/g;
const ASSIGNMENT = /^([A-Za-z_][A-Za-z0-9_]*)=(.+)$/s;
const AUTH_SCHEME = /^(Bearer|Basic|Token|Bot)\s+/i;
const MIN_NAMED_LENGTH = 6;

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
    /^(x+|\*+|\.+|changeme|change-me|placeholder|redacted|example|todo|none|null|undefined|true|false|required|optional)$/i.test(value)
  );
}

function looksLikePath(value: string): boolean {
  return /^(\/|~[/\\]?|\.{1,2}[/\\]|[A-Za-z]:[\\/])/.test(value);
}

function plausible(value: string): boolean {
  const v = value.trim();
  return v.length > 0 && !isReference(v) && !isPlaceholder(v);
}

class SecretCollector {
  readonly found: FoundSecret[] = [];
  add(value: string, at: JsonPath, source: string, label: string, reason: string): void {
    if (!plausible(value)) return;
    if (this.found.some((f) => f.value === value && f.label === label)) return;
    this.found.push({ value, at, source, label, reason });
  }

  /** Known token formats, passwords in connection strings and secret-named query parameters. */
  scanText(text: string, at: JsonPath, label: string, source = text): void {
    for (const { name, re } of KNOWN_TOKENS) for (const m of text.matchAll(re)) this.add(m[0], at, source, label, name);
    for (const m of text.matchAll(URL_PASSWORD)) if (m[1]) this.add(m[1], at, source, label, 'password in a connection string or URL');
    for (const m of text.matchAll(QUERY_PARAM)) {
      if (m[1] && m[2] && (isSecretName(m[1]) || /^(key|sig|signature)$/i.test(m[1]))) this.add(m[2], at, source, label, `secret-named URL parameter ${m[1]}`);
    }
  }

  /** A value stored under a secret-looking name: the whole value is the secret. */
  named(name: string, value: string, at: JsonPath, source: string, label: string): void {
    const v = value.trim().replace(AUTH_SCHEME, '');
    if (v.length < MIN_NAMED_LENGTH || looksLikePath(v) || /^[a-z][a-z0-9+.-]*:\/\//i.test(v)) return;
    this.add(v, at, source, label, `value of the secret-named ${name}`);
  }
}

/** Every plaintext credential in one configured server. */
export function findSecrets(server: ConfiguredServer): FoundSecret[] {
  const c = new SecretCollector();
  for (const [key, value] of Object.entries(server.env)) {
    const at = ['env', key];
    const label = `env ${key}`;
    if (isSecretName(key)) c.named(key, value, at, `${key}=${value}`, label);
    c.scanText(value, at, label, `${key}=${value}`);
  }
  for (const [key, value] of Object.entries(server.headers)) {
    const at = ['headers', key];
    const label = `headers.${key}`;
    if (isSecretName(key)) c.named(key, value, at, `${key}: ${value}`, label);
    c.scanText(value, at, label, `${key}: ${value}`);
  }
  server.args.forEach((arg, i) => {
    const at = ['args', i];
    const label = `args[${i}]`;
    c.scanText(arg, at, label);
    const flag = /^(--?[A-Za-z][A-Za-z0-9_-]*)=(.*)$/s.exec(arg);
    if (flag?.[1] && flag[2] !== undefined && isSecretName(flag[1])) c.named(flag[1], flag[2], at, arg, label);
    const assignment = ASSIGNMENT.exec(arg);
    if (assignment?.[1] && assignment[2] && isSecretName(assignment[1])) c.named(assignment[1], assignment[2], at, arg, label);
    const next = server.args[i + 1];
    if (/^--?[A-Za-z][A-Za-z0-9_-]*$/.test(arg) && isSecretName(arg) && next !== undefined && !next.startsWith('-')) {
      c.named(arg, next, ['args', i + 1], `${arg} ${next}`, `args[${i + 1}]`);
    }
  });
  if (server.url) c.scanText(server.url, ['url'], 'url');
  if (server.command) c.scanText(server.command, ['command'], 'command');
  return c.found;
}
