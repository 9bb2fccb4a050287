import { type Command, InvalidArgumentError, Option } from 'commander';
import { type Config, readPemFile, settingSource } from '../config.js';
import { isUuid } from '../ids.js';
import { AGENT_PREFIXES, GATEWAY_PREFIX, OPERATOR_PREFIX } from '../tokens/format.js';
import { hasVisibleCharacter } from '../tokens/names.js';
import { ENVIRONMENTS } from '../tokens/store.js';
import { clientCertificateHint, OperatorRequestError, operatorRequest } from './operator-http.js';
import { printable, printableJson } from './printable.js';

// `killswitch kill | kills | unkill`: the break-glass kills from a terminal or a script, through the
// control plane's admin API (KILLSWITCH_URL) with an operator key from the environment
// (KILLSWITCH_OPERATOR_KEY). Works while Unleash is down: kills never touch it.

export interface KillOptions {
  everything?: boolean;
  server?: string;
  capability?: string;
  token?: string;
  project?: string;
  role?: string;
  environment?: string;
  session?: string;
  reason: string;
  expiresIn?: number;
  json?: boolean;
}

export interface ApiKill {
  id: string;
  target: string;
  description: string;
  reason: string;
  created_by: string;
  created_at: string;
  expires_at: string | null;
  lifted_at: string | null;
  lifted_by: string | null;
  lift_reason: string | null;
  state: string;
}

type Out = { write(s: string): unknown };

/**
 * Exit codes (docs/cli.md): 0 done, 1 the control plane refused or failed, 2 bad usage or configuration,
 * 3 (`kill` only) the kill is recorded but Redis did not take it, so it is not yet enforced everywhere.
 */
export const KILL_NOT_ENFORCED = 3;

export class CliFailure extends Error {
  constructor(
    message: string,
    readonly exitCode: 1 | 2,
  ) {
    super(message);
  }
}

/**
 * Exit 1 because nothing that is the control plane answered at KILLSWITCH_URL (no connection, no complete
 * answer, or another service's answer): every other request to the same address would fail the same way.
 */
export class UnreachableFailure extends CliFailure {
  constructor(message: string) {
    super(message, 1);
  }
}

/**
 * `30s`, `10m`, `2h`, `1d` → seconds. A bare number is refused: `--expires-in 30` meant 30 seconds, and an
 * operator who wrote it after reading `30m` in the help got a kill that lifted itself half a minute later.
 */
export function parseDuration(v: string): number {
  const text = v.trim();
  if (/^\d+$/.test(text)) throw new InvalidArgumentError(`${text} has no unit: write ${text}s, ${text}m, ${text}h or ${text}d (seconds, minutes, hours, days)`);
  const m = /^(\d+)([smhd])$/.exec(text);
  if (!m) throw new InvalidArgumentError('expected a number and a unit, like 30s, 10m, 2h or 1d');
  const n = Number(m[1]) * { s: 1, m: 60, h: 3600, d: 86400 }[m[2] as 's' | 'm' | 'h' | 'd'];
  if (n < 1) throw new InvalidArgumentError('must be at least one second');
  return n;
}

/**
 * `--reason`: refused (exit 2, before any request) when it has no visible character. The API takes a
 * reason of spaces, and the kill then reads "— " in every denial, alert and audit row: nobody can tell why.
 */
export function parseReason(v: string): string {
  if (!hasVisibleCharacter(v)) throw new InvalidArgumentError('must contain at least one visible character: say why (an incident id, what happened)');
  return v;
}

/** The API body for the options given; exactly one target (a capability may name its server). */
export function killBody(o: KillOptions): Record<string, unknown> {
  const given = (['server', 'capability', 'token', 'project', 'role', 'environment', 'session'] as const).filter((k) => o[k] !== undefined);
  let body: Record<string, unknown>;
  if (o.everything) {
    if (given.length > 0) throw new CliFailure('--everything takes no other target option', 2);
    body = { target: 'everything' };
  } else if (o.capability !== undefined) {
    if (given.some((k) => k !== 'capability' && k !== 'server')) throw new CliFailure('--capability combines only with --server', 2);
    body = { target: 'capability', capability: o.capability, ...(o.server ? { server: o.server } : {}) };
  } else if (given.length !== 1) {
    throw new CliFailure('name one target: --everything, --server, --capability [--server], --token, --project, --role, --environment or --session', 2);
  } else {
    const k = given[0]!;
    const field = { server: 'server', token: 'token_id', project: 'project_id', role: 'role', environment: 'environment', session: 'session_id', capability: 'capability' }[k];
    body = { target: k, [field]: o[k] };
  }
  body['reason'] = o.reason;
  if (o.expiresIn !== undefined) body['expires_in'] = o.expiresIn;
  return body;
}

/**
 * KILLSWITCH_URL as messages show it. A user name or password in it is refused before any request: the
 * operator key is the credential, and an error message must not carry it.
 */
export function controlPlaneUrl(raw: string): URL {
  let base: URL;
  try {
    base = new URL(raw.endsWith('/') ? raw : `${raw}/`);
  } catch {
    throw new CliFailure('KILLSWITCH_URL is not a URL (for example http://127.0.0.1:8080)', 2);
  }
  if (base.username || base.password) {
    throw new CliFailure(`KILLSWITCH_URL holds a user name or password (${base.protocol}//***@${base.host}): remove them; the operator key in KILLSWITCH_OPERATOR_KEY is the credential`, 2);
  }
  return base;
}

/**
 * KILLSWITCH_CLIENT_CERT_FILE and KILLSWITCH_CLIENT_KEY_FILE read and checked before any request (exit 2
 * naming the setting): undefined when neither is set.
 */
export function operatorClientTls(cfg: Pick<Config, 'killswitchClientCertFile' | 'killswitchClientKeyFile'>, base: URL): { cert: Buffer; key: Buffer } | undefined {
  const { killswitchClientCertFile: certFile, killswitchClientKeyFile: keyFile } = cfg;
  if (!certFile && !keyFile) return undefined;
  if (!certFile || !keyFile) {
    const missing = certFile ? 'KILLSWITCH_CLIENT_KEY_FILE' : 'KILLSWITCH_CLIENT_CERT_FILE';
    throw new CliFailure(`${missing} is not set: a client certificate for mutual TLS needs both KILLSWITCH_CLIENT_CERT_FILE and KILLSWITCH_CLIENT_KEY_FILE (PEM files), or neither`, 2);
  }
  if (base.protocol !== 'https:') {
    throw new CliFailure(`KILLSWITCH_CLIENT_CERT_FILE is set but KILLSWITCH_URL is ${base.protocol}//${base.host}: a client certificate is only presented over https://`, 2);
  }
  const cert = readPemFile(certFile, 'certificate');
  if ('problem' in cert) throw new CliFailure(`KILLSWITCH_CLIENT_CERT_FILE=${certFile}: ${cert.problem}`, 2);
  const key = readPemFile(keyFile, 'private key');
  if ('problem' in key) throw new CliFailure(`KILLSWITCH_CLIENT_KEY_FILE=${keyFile}: ${key.problem}`, 2);
  if (!cert.certificates[0]!.checkPrivateKey(key.key)) {
    throw new CliFailure(`KILLSWITCH_CLIENT_KEY_FILE=${keyFile}: not the private key of the certificate in KILLSWITCH_CLIENT_CERT_FILE (${certFile})`, 2);
  }
  return { cert: cert.pem, key: key.pem };
}

/**
 * What an answer that is not the control plane's API says, instead of a stack of HTML or "Cannot read
 * properties of undefined": KILLSWITCH_URL names something else (the embedded Unleash's port, a gateway,
 * a proxy's error page, another service). The body is not printed: it is not ours and may be a whole page.
 */
function notTheControlPlane(base: URL, status: number, contentType: string | undefined): CliFailure {
  const what = `HTTP ${status}${contentType ? `, ${contentType.split(';')[0]!.trim()}` : ''}`;
  return new UnreachableFailure(
    printable(
      `${base.origin} (KILLSWITCH_URL) answered ${what}, which is not the control plane's API: check that KILLSWITCH_URL is the control plane's own address (its HOST and PORT, as in \`curl $KILLSWITCH_URL/healthz\`), ` +
        'not the Unleash UI, a gateway or the admin UI. A proxy in front of it answers this way when the control plane behind it is down.',
    ),
  );
}

/**
 * What to do when nothing answered: the socket error alone (`connect ECONNREFUSED 127.0.0.1:8080`) does not
 * say whether the control plane is down or the shell names another address (or none: the default).
 */
function unreachableHint(err: OperatorRequestError, base: URL): string {
  const check = `check that the control plane runs there (\`curl ${base.origin}/healthz\` answers 200) and that KILLSWITCH_URL is its address`;
  if (err.code === 'ECONNREFUSED') return `. Nothing accepts connections at ${base.host}: ${check}`;
  if (err.code === 'ENOTFOUND' || err.code === 'EAI_AGAIN') return `. The host name ${base.hostname} does not resolve: ${check}`;
  if (err.code === 'ETIMEDOUT' || err.code === 'EHOSTUNREACH' || err.code === 'ENETUNREACH') return `. Nothing answered in time (a firewall, a wrong address, or a control plane that is stuck): ${check}`;
  return '';
}

/**
 * KILLSWITCH_OPERATOR_KEY as sent. The line break a secret file or a Kubernetes secret ends with is
 * dropped (it failed as "cannot reach the control plane: Invalid character in header content"); anything
 * else that cannot be a key is refused (exit 2) without printing it: it is a secret, or holds one.
 */
export function operatorKey(raw: string | undefined): string {
  // Said for every operator command: a viewer key is enough for the reads (status, kills, audit search), which an
  // on-call holding one was told needed operator.
  if (!raw) {
    throw new CliFailure('set KILLSWITCH_OPERATOR_KEY to an operator key (ksop_...): a viewer key for status, kills and audit search, role operator or owner for kill, unkill, revoke and resume', 2);
  }
  const key = raw.trim();
  if (/^bearer\s/i.test(key)) throw new CliFailure('KILLSWITCH_OPERATOR_KEY starts with "Bearer ": set it to the key alone (ksop_...); the CLI adds the header (the value is not printed)', 2);
  if (key === '' || /[^\x21-\x7e]/.test(key)) {
    throw new CliFailure('KILLSWITCH_OPERATOR_KEY holds a space, line break, control or non-ASCII character inside it: set it to the key alone (ksop_..., as printed when it was created; the value is not printed)', 2);
  }
  return key;
}

/** How long one request of the operator CLI may take, the whole exchange (docs/cli.md). */
export const OPERATOR_REQUEST_TIMEOUT_MS = 15_000;

/**
 * One request of the operator CLI: the answer's JSON when it is 2xx (or a status in `accept`, as /readyz's
 * 503) and has the expected shape; else a CliFailure saying what answered and what to check. `timeoutMs`:
 * longer for a read the API itself may take longer than 15 s to answer (an audit search).
 */
export async function call(
  cfg: Config,
  method: string,
  path: string,
  body?: unknown,
  shape: (json: Record<string, unknown>) => boolean = () => true,
  accept: readonly number[] = [],
  timeoutMs = OPERATOR_REQUEST_TIMEOUT_MS,
): Promise<unknown> {
  const key = operatorKey(cfg.killswitchOperatorKey);
  const base = controlPlaneUrl(cfg.killswitchUrl);
  const clientTls = operatorClientTls(cfg, base);
  let res: { status: number; text: string; contentType?: string };
  try {
    res = await operatorRequest({
      url: new URL(path, base),
      method,
      headers: { authorization: `Bearer ${key}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      ...(clientTls ? { clientTls } : {}),
      timeoutMs,
    });
  } catch (err) {
    const e = err instanceof OperatorRequestError ? err : new OperatorRequestError('ERROR', (err as Error).message);
    const detail = e.message.includes(e.code) ? e.message : `${e.code}: ${e.message}`;
    throw new UnreachableFailure(
      printable(`cannot reach the control plane at ${base.origin} (${settingSource('KILLSWITCH_URL')}): ${detail}${clientCertificateHint(e, base.protocol === 'https:', clientTls !== undefined)}${unreachableHint(e, base)}`),
    );
  }
  const text = res.text;
  let json: unknown;
  try {
    json = text ? JSON.parse(text) : undefined;
  } catch {
    json = undefined;
  }
  const object = typeof json === 'object' && json !== null && !Array.isArray(json) ? (json as Record<string, unknown>) : undefined;
  if ((res.status < 200 || res.status > 299) && !(accept.includes(res.status) && object !== undefined && shape(object))) {
    // Every error of the control plane is `{ "error": { "code", "message" } }` (docs/errors.md).
    const e = object?.['error'] as { code?: unknown; message?: unknown } | undefined;
    if (typeof e?.code !== 'string' || typeof e.message !== 'string') throw notTheControlPlane(base, res.status, res.contentType);
    // Which key, at which control plane: a key of another installation (or a shell with the wrong
    // KILLSWITCH_URL) is the usual cause, and the API's answer cannot say so.
    const hint =
      res.status === 401
        ? ` The control plane at ${base.origin} (KILLSWITCH_URL) refused KILLSWITCH_OPERATOR_KEY: check that it is a live operator key of that installation.`
        : res.status === 403 && e.code === 'MCP_TOKEN_FORBIDDEN'
          ? ' KILLSWITCH_OPERATOR_KEY holds an agent token or a gateway key, which the admin API refuses: set it to an operator key (ksop_...; `killswitch operators create` makes one).'
          : res.status === 403
          ? ' KILLSWITCH_OPERATOR_KEY is a live key of that installation, but its role or projects do not allow this: use a key with the role and projects the message names (reading needs a viewer key or above; killing and lifting an operator or owner key).'
          : '';
    throw new CliFailure(printable(`${res.status} ${e.code}: ${e.message}`.trim() + hint), 1);
  }
  if (object === undefined || !shape(object)) throw notTheControlPlane(base, res.status, res.contentType);
  return json;
}

const isKillAnswer = (j: Record<string, unknown>) => typeof j['kill'] === 'object' && j['kill'] !== null && typeof j['message'] === 'string';

// Every string the control plane answers goes through printable (or printableJson): a reason holding
// ESC or a line break must not rewrite the screen or forge a kill line of its own.
export function line(k: ApiKill): string {
  const until = k.state === 'active' ? (k.expires_at ? `until ${k.expires_at}` : 'until lifted') : k.state === 'lifted' ? `lifted by ${k.lifted_by ?? '?'} at ${k.lifted_at} (${k.lift_reason ?? ''})` : `expired ${k.expires_at}`;
  return printable(`${k.id}  ${k.state.padEnd(7)}  ${k.description}  — ${k.reason}  [by ${k.created_by} at ${k.created_at}, ${until}]`);
}

/**
 * `enforced: false`: the kill is in Postgres but Redis did not take it. Replicas that cannot reach Redis
 * deny anyway, but one that can keeps allowing the calls until its reconciler applies the kill (about 5 s),
 * so a script's `killswitch kill ... && notify contained` must not take it for done.
 */
export function killExitCode(answer: { enforced?: unknown }): 0 | typeof KILL_NOT_ENFORCED {
  return answer.enforced === true ? 0 : KILL_NOT_ENFORCED;
}

/**
 * A token as the Tokens page, alerts and messages show it: its type prefix and (up to) the first 4
 * characters after it (src/tokens/format.ts, displayPrefix), perhaps copied with the trailing ellipsis.
 */
const DISPLAY_PREFIX = new RegExp(`^((?:${Object.values(AGENT_PREFIXES).join('|')})[0-9A-Za-z]{1,4})(?:…|\\.\\.\\.)?$`);
const SECRET_PREFIXES = [...Object.values(AGENT_PREFIXES), GATEWAY_PREFIX, OPERATOR_PREFIX];
const WHERE_IDS_ARE = "copy the token's id from the admin UI's Tokens page or from `GET /v1/keys`";

interface ApiToken {
  id: string;
  type: string;
  display_prefix: string;
  description: string;
  project_id: string;
  expires_at: string | null;
  revoked_at: string | null;
}

/**
 * `--token` as the API's token_id. A UUID is sent as it is. A display prefix (`mcp_rw_XFuj`, what lists
 * and alerts show) is looked up among the live tokens the key can see (GET /v1/keys, every page) and
 * used when exactly one matches; with `anyState`, among revoked and expired ones too (reading the audit
 * trail of a token revoked during the incident). Anything else is refused before any request: a raw
 * token, or any part of one beyond its display prefix, is a secret that must not travel or be printed.
 */
export async function resolveTokenId(cfg: Config, given: string, verb = 'kill', opts: { anyState?: boolean } = {}): Promise<string> {
  const text = given.trim();
  if (isUuid(text)) return text;
  const display = DISPLAY_PREFIX.exec(text)?.[1];
  if (display === undefined) {
    if (SECRET_PREFIXES.some((p) => text.includes(p))) {
      throw new CliFailure(
        "--token takes the token's id (a UUID) or its display prefix (like mcp_rw_XFuj, as the Tokens page and alerts show it), not the token itself: " +
          `a token is a secret, so it was not sent anywhere (nor printed here); ${WHERE_IDS_ARE}.`,
        2,
      );
    }
    throw new CliFailure(`--token ${printable(text)} is neither a token id (a UUID) nor a display prefix (like mcp_rw_XFuj): ${WHERE_IDS_ARE}`, 2);
  }
  const type = (Object.entries(AGENT_PREFIXES) as Array<[string, string]>).find(([, p]) => display.startsWith(p))![0];
  const live = opts.anyState !== true;
  const matches: ApiToken[] = [];
  let before: string | undefined;
  for (;;) {
    const page = (
      (await call(cfg, 'GET', `v1/keys?type=${type}${live ? '&revoked=false' : ''}&limit=500${before ? `&before=${before}` : ''}`, undefined, (j) => Array.isArray(j['keys']))) as {
        keys: ApiToken[];
      }
    ).keys;
    const now = Date.now();
    matches.push(...page.filter((k) => k.display_prefix.startsWith(display) && (!live || k.expires_at === null || Date.parse(k.expires_at) > now)));
    if (page.length < 500) break;
    before = page[page.length - 1]!.id;
  }
  if (matches.length === 1) return matches[0]!.id;
  if (matches.length === 0) {
    const which = live ? 'live (unrevoked, unexpired) agent token' : 'agent token (live, revoked or expired)';
    throw new CliFailure(`no ${which} this operator key can see has the display prefix ${display}…: ${WHERE_IDS_ARE}, and pass the id`, 1);
  }
  const state = (k: ApiToken) => (k.revoked_at ? `  revoked ${k.revoked_at}` : k.expires_at !== null && Date.parse(k.expires_at) <= Date.now() ? `  expired ${k.expires_at}` : '');
  const listed = matches.map((k) => printable(`  ${k.id}  ${k.display_prefix}…  project ${k.project_id}  ${k.description || '(no description)'}${state(k)}`)).join('\n');
  throw new CliFailure(`${matches.length} ${live ? 'live ' : ''}agent tokens have the display prefix ${display}…; pass the id of the one to ${verb}:\n${listed}`, 1);
}

export async function kill(cfg: Config, o: KillOptions, out: Out, err: Out): Promise<number> {
  const body = killBody(o);
  if (body['target'] === 'token') body['token_id'] = await resolveTokenId(cfg, o.token!);
  if (body['target'] === 'session' && !isUuid(o.session!)) {
    throw new CliFailure(
      `--session ${printable(o.session!)} is not a session id (a UUID): the admin UI's Sessions page shows the ids, and \`GET /v1/sessions?token=<token id>\` lists a token's sessions`,
      2,
    );
  }
  const res = (await call(cfg, 'POST', 'v1/kills', body, isKillAnswer)) as { kill: ApiKill; enforced: boolean; message: string };
  if (o.json) out.write(`${printableJson(res)}\n`);
  // Which control plane took it: a shell with another KILLSWITCH_URL (or none: the default) killed elsewhere.
  else out.write(`${printable(res.message)}\n${line(res.kill)}\n${controlPlaneLine(cfg)}\nLift with: killswitch unkill ${printable(res.kill.id)} --reason "..."\n`);
  const code = killExitCode(res);
  if (code === KILL_NOT_ENFORCED) {
    err.write(
      `killswitch: kill ${printable(res.kill.id)} is recorded but NOT ENFORCED YET (exit ${KILL_NOT_ENFORCED}): Redis did not take it. ` +
        'Replicas that cannot reach Redis deny every call, but one that can keeps allowing the calls this kill matches until its reconciler applies it from Postgres (about 5 seconds). ' +
        'Check with `killswitch kills` and a decision explain (docs/runbook-incident.md, step 1) before treating the incident as contained.\n',
    );
  }
  return code;
}

/** The API's largest page (GET /v1/kills, /v1/sessions, /v1/alerts): lists are read a full page at a time. */
export const PAGE = 500;

/**
 * Every page of a list, up to `cap` items (null: no cap); `complete` is false when more were left unread.
 * `path` builds the request for a cursor (null: the first page) and the number of items to ask for (pages
 * of `pageSize`, default PAGE, the last one cut to what `cap` leaves, so a small cap reads no more than it
 * keeps); `key` names the list in the answer and `cursorKey` the cursor of the next page. `timeoutMs`
 * bounds each request (default OPERATOR_REQUEST_TIMEOUT_MS).
 */
export async function readPages<T>(
  cfg: Config,
  path: (cursor: string | null, limit: number) => string,
  key: string,
  cursorKey: string,
  cap: number | null,
  opts: { pageSize?: number; timeoutMs?: number } = {},
): Promise<{ items: T[]; complete: boolean }> {
  const pageSize = opts.pageSize ?? PAGE;
  const items: T[] = [];
  let cursor: string | null = null;
  for (;;) {
    const want = cap === null ? pageSize : Math.min(pageSize, cap - items.length);
    const page = (await call(cfg, 'GET', path(cursor, want), undefined, (j) => Array.isArray(j[key]), [], opts.timeoutMs)) as Record<string, unknown>;
    const list = page[key] as T[];
    // Never more than asked for: a control plane that ignores the limit cannot push the list past the cap.
    items.push(...list.slice(0, want));
    const next = page[cursorKey];
    // A next page only after a full one, and never the same cursor again: a control plane that repeats it cannot loop.
    if (list.length < want || typeof next !== 'string' || next === cursor) return { items, complete: true };
    if (cap !== null && items.length >= cap) return { items, complete: false };
    cursor = next;
  }
}

/** Every kill (in force, or with `all` every state), reading every page of GET /v1/kills. */
export async function readKills(cfg: Config, all: boolean): Promise<ApiKill[]> {
  // Every page: a list cut at the first 500 (what `kills --all --json > kills.json` keeps as evidence) left
  // out the oldest kills without a word.
  const path = (before: string | null, limit: number) => `v1/kills?state=${all ? 'all' : 'active'}&limit=${limit}${before ? `&before=${encodeURIComponent(before)}` : ''}`;
  return (await readPages<ApiKill>(cfg, path, 'kills', 'next_before', null)).items;
}

/** The line that says which control plane took an action: a shell with another KILLSWITCH_URL (or none: the default) acted elsewhere. */
export function controlPlaneLine(cfg: Config): string {
  return `Control plane: ${controlPlaneUrl(cfg.killswitchUrl).origin} (KILLSWITCH_URL)`;
}

export async function listKills(cfg: Config, o: { all?: boolean; json?: boolean }, out: Out): Promise<void> {
  const kills = await readKills(cfg, o.all === true);
  if (o.json) {
    out.write(`${printableJson(kills)}\n`);
    return;
  }
  if (kills.length === 0) out.write(o.all ? 'no kills\n' : 'no kills in force\n');
  for (const k of kills) out.write(`${line(k)}\n`);
}

export async function unkill(cfg: Config, id: string, o: { reason: string; json?: boolean }, out: Out): Promise<void> {
  const res = (await call(cfg, 'DELETE', `v1/kills/${encodeURIComponent(id)}`, { reason: o.reason }, isKillAnswer)) as { kill: ApiKill; message: string };
  if (o.json) out.write(`${printableJson(res)}\n`);
  else out.write(`${printable(res.message)}\n${line(res.kill)}\n`);
}

/** Runs a subcommand; a number it returns is the exit code. */
export async function run(action: () => Promise<unknown>): Promise<void> {
  try {
    const code = await action();
    if (typeof code === 'number') process.exitCode = code;
  } catch (err) {
    if (err instanceof CliFailure) {
      process.stderr.write(`killswitch: ${err.message}\n`);
      process.exitCode = err.exitCode;
      return;
    }
    throw err;
  }
}

export function registerKillCommands(program: Command, config: () => Config): void {
  program
    .command('kill')
    .description('Break glass: stop calls on every replica at once, without Unleash (KILLSWITCH_URL, KILLSWITCH_OPERATOR_KEY).')
    .option('--everything', 'every MCP call of every agent')
    .option('--server <name>', 'one MCP server (with --capability: only that capability on it)')
    .addOption(new Option('--capability <capability>', 'one capability, on every server or on --server').choices(['read', 'write', 'delete']))
    .option('--token <id>', 'one agent token: its id, or its display prefix as the Tokens page shows it (mcp_rw_XFuj), never the token itself')
    .option('--project <id>', 'every token of a project')
    .option('--role <role>', 'every token of a policy role')
    // Checked here, so a wrong value is a usage error (exit 2) rather than the API's 400 (exit 1).
    .addOption(new Option('--environment <env>', 'every token of an environment').choices(ENVIRONMENTS))
    .option('--session <id>', 'one session')
    .requiredOption('--reason <text>', 'why (shown in every denial, the audit trail and the alert)', parseReason)
    .option('--expires-in <duration>', 'lift automatically after this long: a number and a unit s, m, h or d (30m, 2h); default: until lifted', parseDuration)
    .option('--json', 'print the API answer as JSON')
    .addHelpText(
      'after',
      '\nExit codes: 0 killed on every replica; 1 the control plane refused or failed; 2 bad usage or configuration;\n' +
        '3 recorded but not enforced yet (Redis did not take it: a replica that reaches Redis keeps allowing for about 5 s).',
    )
    .action((o: KillOptions) => run(() => kill(config(), o, process.stdout, process.stderr)));

  program
    .command('kills')
    .description('List the kills in force (--all: with lifted and expired ones).')
    .option('--all', 'also lifted and expired kills')
    .option('--json', 'print JSON')
    .addHelpText('after', '\nExit codes: 0 listed (every page); 1 the control plane refused or failed; 2 bad usage or configuration.')
    .action((o: { all?: boolean; json?: boolean }) => run(() => listKills(config(), o, process.stdout)));

  program
    .command('unkill')
    .description('Lift a kill (audited, alerted).')
    .argument('<id>', 'kill id (from `killswitch kills`)', (value: string) => {
      // A usage error (exit 2), checked before any request, as the kill options are.
      if (!isUuid(value.trim())) throw new InvalidArgumentError('expected a kill id (a UUID, as `killswitch kills` lists it)');
      return value.trim();
    })
    .requiredOption('--reason <text>', 'why the kill can go', parseReason)
    .option('--json', 'print the API answer as JSON')
    .addHelpText(
      'after',
      '\nExit codes: 0 lifted on every replica (another kill of the same target may still hold: the answer says so); 1 the control plane refused (unknown id, already lifted, Redis unavailable: nothing lifted) or failed; 2 bad usage or configuration.',
    )
    .action((id: string, o: { reason: string; json?: boolean }) => run(() => unkill(config(), id, o, process.stdout)));
}
