import { readFileSync, statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { Ajv } from 'ajv';
import { type Static, Type } from 'typebox';
import { redactUrl, reportedUrl, URL_USERINFO } from '../audit/redact.js';
import { type GatewaySettings, gatewaySettings, readPemFile } from '../config.js';
import { TEXT_PATTERN } from '../tokens/names.js';
import { DEFAULT_TOOL_REPORT_MAX_BYTES } from './catalog.js';
import type { ControlPlaneTls } from './control-plane.js';
import { type ProhibitedFinding, pathOf, prohibitedUpstreamConfig, type UpstreamLaunch } from './prohibited.js';
import { ConfigReferenceError, expandHome, hasReference, type ReferenceSources, resolveReferences } from './references.js';

// The gateway's config file has the shape of claude_desktop_config.json (`mcpServers` with
// command/args/env, or url/headers), so an existing desktop config can be moved behind the gateway
// as it is, plus one `killswitch` section for the control plane, the session scope and the guards.

export const DEFAULT_MAX_RESULT_BYTES = 1_048_576;
export const DEFAULT_MAX_EXECUTION_SECONDS = 30;
export const DEFAULT_TIMEOUT_MS = 2000;
export const DEFAULT_HTTP_PORT = 8788;
export const DEFAULT_APPROVAL_TIMEOUT_SECONDS = 300;
export const DEFAULT_APPROVAL_POLL_SECONDS = 1;
/**
 * The longest one upstream's tools/list, resources/list, resources/templates/list or prompts/list may
 * take, all its pages together (the SDK's own default is 60 s per request). One that takes longer, or
 * fails, contributes nothing to that list; the other upstreams' entries are listed.
 */
export const DEFAULT_LIST_TIMEOUT_MS = 10_000;
/**
 * An agent that connects lists its tools, resources, templates and prompts at once, each of which needs
 * the control plane's answer for its token: one report serves them all for this long.
 */
export const DEFAULT_REPORT_REUSE_MS = 1_000;
export const SERVER_NAME = /^[A-Za-z0-9._-]{1,200}$/;

const Limits = {
  maxResultBytes: Type.Optional(Type.Integer({ minimum: 1 })),
  maxRows: Type.Optional(Type.Integer({ minimum: 0 })),
  maxExecutionSeconds: Type.Optional(Type.Number({ exclusiveMinimum: 0, maximum: 86_400 })),
};

const UpstreamEntry = Type.Object(
  {
    command: Type.Optional(Type.String({ minLength: 1 })),
    args: Type.Optional(Type.Array(Type.String())),
    env: Type.Optional(Type.Record(Type.String(), Type.String())),
    cwd: Type.Optional(Type.String({ minLength: 1 })),
    url: Type.Optional(Type.String({ minLength: 1 })),
    headers: Type.Optional(Type.Record(Type.String(), Type.String())),
    type: Type.Optional(Type.String()),
    disabled: Type.Optional(Type.Boolean()),
  },
  // Other desktop clients add their own keys (autoApprove, alwaysAllow, timeout): ignored, not fatal.
  { additionalProperties: true },
);

const KillswitchSection = Type.Object(
  {
    url: Type.Optional(Type.String({ minLength: 1 })),
    gatewayKey: Type.Optional(Type.String({ minLength: 1 })),
    agentToken: Type.Optional(Type.String({ minLength: 1 })),
    timeoutMs: Type.Optional(Type.Integer({ minimum: 10, maximum: 60_000 })),
    // PEM files for an https:// url: the CA that issued the control plane's certificate, and this
    // gateway's client certificate and key when the control plane requires mutual TLS.
    tls: Type.Optional(
      Type.Object(
        { caFile: Type.Optional(Type.String({ minLength: 1 })), certFile: Type.Optional(Type.String({ minLength: 1 })), keyFile: Type.Optional(Type.String({ minLength: 1 })) },
        { additionalProperties: false },
      ),
    ),
    startTimeoutMs: Type.Optional(Type.Integer({ minimum: 100, maximum: 600_000 })),
    listTimeoutMs: Type.Optional(Type.Integer({ minimum: 100, maximum: 600_000 })),
    // The control plane's BODY_LIMIT_BYTES (the same bounds): raise both together.
    toolReportMaxBytes: Type.Optional(Type.Integer({ minimum: 1024, maximum: 104_857_600 })),
    // At most a minute: an answer kept longer would hide a revocation or a new policy for that long.
    reportReuseMs: Type.Optional(Type.Integer({ minimum: 0, maximum: 60_000 })),
    environment: Type.Optional(Type.Union([Type.Literal('development'), Type.Literal('staging'), Type.Literal('production')])),
    session: Type.Optional(
      Type.Object(
        {
          readOnly: Type.Optional(Type.Boolean()),
          servers: Type.Optional(Type.Array(Type.String({ minLength: 1 }), { uniqueItems: true })),
          purpose: Type.Optional(Type.String({ maxLength: 1000, pattern: TEXT_PATTERN })),
        },
        { additionalProperties: false },
      ),
    ),
    limits: Type.Optional(Type.Object(Limits, { additionalProperties: false })),
    approvals: Type.Optional(
      Type.Object(
        {
          mode: Type.Optional(Type.Union([Type.Literal('wait'), Type.Literal('return')])),
          timeoutSeconds: Type.Optional(Type.Number({ exclusiveMinimum: 0, maximum: 86_400 })),
          pollSeconds: Type.Optional(Type.Number({ minimum: 1, maximum: 2 })),
        },
        { additionalProperties: false },
      ),
    ),
    servers: Type.Optional(
      Type.Record(Type.String(), Type.Object({ ...Limits, allowedDirectories: Type.Optional(Type.Array(Type.String({ minLength: 1 }))) }, { additionalProperties: false })),
    ),
    http: Type.Optional(
      Type.Object(
        {
          host: Type.Optional(Type.String({ minLength: 1 })),
          port: Type.Optional(Type.Integer({ minimum: 0, maximum: 65_535 })),
          path: Type.Optional(Type.String({ pattern: '^/' })),
          allowedHosts: Type.Optional(Type.Array(Type.String({ minLength: 1 }))),
        },
        { additionalProperties: false },
      ),
    ),
    // A listener of its own for GET /metrics: the only way to scrape a stdio gateway, and a way to keep
    // the metrics off the port agents reach (the HTTP front then no longer serves them).
    metrics: Type.Optional(Type.Object({ host: Type.Optional(Type.String({ minLength: 1 })), port: Type.Integer({ minimum: 0, maximum: 65_535 }) }, { additionalProperties: false })),
  },
  { additionalProperties: false },
);

export const GatewayConfigFileSchema = Type.Object(
  {
    mcpServers: Type.Record(Type.String(), UpstreamEntry),
    killswitch: Type.Optional(KillswitchSection),
  },
  { additionalProperties: false },
);
export type GatewayConfigFile = Static<typeof GatewayConfigFileSchema>;

export interface UpstreamLimits {
  maxResultBytes: number;
  maxRows: number | undefined;
  maxExecutionMs: number;
}

/** What the gateway reports to POST /v1/gateway/tools as the way it really runs an upstream. */
export interface UpstreamIdentity {
  url?: string;
  command?: string;
  args?: string[];
}

export interface UpstreamConfig {
  name: string;
  transport: 'stdio' | 'http';
  command?: string;
  args: string[];
  env: Record<string, string>;
  cwd?: string;
  url?: string;
  headers: Record<string, string>;
  identity: UpstreamIdentity;
  /** Paths in arguments are resolved against these (server-filesystem's own rule). */
  allowedDirectories: string[];
  limits: UpstreamLimits;
}

export interface SessionScope {
  readOnly: boolean;
  servers: string[] | undefined;
  purpose: string;
}

export interface GatewayConfig {
  file: string;
  controlPlane: { url: string; gatewayKey: string; timeoutMs: number; tls?: ControlPlaneTls };
  agentToken: string | undefined;
  environment: 'development' | 'staging' | 'production' | undefined;
  session: SessionScope;
  upstreams: UpstreamConfig[];
  http: { host: string; port: number; path: string; allowedHosts: string[] | undefined };
  /** `killswitch.metrics`: GET /metrics on a listener of its own (src/gateway/metrics.ts); unset, the HTTP front serves it. */
  metrics: { host: string; port: number } | undefined;
  startTimeoutMs: number;
  /** The longest one upstream's list (tools, resources, templates, prompts) may take once the gateway runs. */
  listTimeoutMs: number;
  /** The largest tool report body (POST /v1/gateway/tools): the control plane's BODY_LIMIT_BYTES. */
  toolReportMaxBytes: number;
  /** How long a tool report's answer serves the same token's next lists (0: each list reports). */
  reportReuseMs: number;
  /** A call that needs a human approval: wait for the operator (polling the control plane), or return its id at once. */
  approvals: ApprovalWait;
}

export interface ApprovalWait {
  mode: 'wait' | 'return';
  timeoutMs: number;
  pollMs: number;
}

export class GatewayConfigError extends Error {
  constructor(
    readonly problems: string[],
    readonly findings: ProhibitedFinding[] = [],
  ) {
    super(`gateway config is invalid:\n  - ${problems.join('\n  - ')}`);
    this.name = 'GatewayConfigError';
  }
}

const ajv = new Ajv({ allErrors: true, strict: false });
const validateFile = ajv.compile(GatewayConfigFileSchema as object);

const CREDENTIAL_PREFIX = /^(ksgw_|mcp_(ro|rw|admin)_|ksop_)/;

/**
 * An argument as reported to the control plane: its resolved value when that is a path or a URL
 * (credentials removed), the reference text otherwise, so a secret passed as an argument never leaves.
 */
function reportedArg(raw: string, resolved: string): string {
  if (!hasReference(raw)) return URL_USERINFO.test(raw) ? reportedUrl(raw) : raw;
  if (/^[A-Za-z][A-Za-z0-9+.-]*:\/\//.test(resolved)) return reportedUrl(resolved);
  if (pathOf(resolved) !== undefined) return resolved;
  return raw;
}

/**
 * Upstream args that name directories: server-filesystem's allowed directories. A path that does not
 * exist yet counts (the server accepts directories created later); an existing file (a script) does not.
 */
function directoriesIn(args: readonly string[]): string[] {
  const out: string[] = [];
  for (const arg of args) {
    const path = pathOf(arg);
    if (path === undefined) continue;
    try {
      if (statSync(path).isDirectory()) out.push(path);
    } catch {
      out.push(path);
    }
  }
  return out;
}

function launchOf(e: { command?: string | undefined; args: readonly string[]; env: Record<string, string>; url?: string | undefined; headers: Record<string, string>; allowedDirectories: readonly string[] }): UpstreamLaunch {
  return { command: e.command, args: e.args, env: e.env, url: e.url, headers: e.headers, allowedDirectories: e.allowedDirectories };
}

/**
 * What the gateway takes from its environment: src/config.ts's GatewaySettings, or a plain environment
 * (tests, the benchmark), which src/config.ts reads into one the same way.
 */
export type GatewayEnvironment = GatewaySettings | Readonly<Record<string, string | undefined>>;

function settingsOf(from: GatewayEnvironment): GatewaySettings {
  // A plain environment's values are strings: only GatewaySettings has an object here.
  return typeof from['referenceEnv'] === 'object' ? (from as GatewaySettings) : gatewaySettings(from as Readonly<Record<string, string | undefined>>);
}

/** Parses, resolves references and checks a config; throws GatewayConfigError listing every problem. */
export function parseGatewayConfig(text: string, file: string, from: GatewayEnvironment): GatewayConfig {
  const settings = settingsOf(from);
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (err) {
    throw new GatewayConfigError([`${file} is not JSON: ${(err as Error).message}`]);
  }
  if (!validateFile(data)) {
    throw new GatewayConfigError(
      (validateFile.errors ?? []).map((e) => {
        // The text pattern as words: a regex of escaped code points tells nobody what to fix.
        const message = e.keyword === 'pattern' && e.params['pattern'] === TEXT_PATTERN ? 'must not contain line breaks, control characters or bidirectional marks' : (e.message ?? 'is invalid');
        return `${e.instancePath || '/'} ${message}${e.params && 'additionalProperty' in e.params ? ` (${String(e.params['additionalProperty'])})` : ''}`;
      }),
    );
  }
  const cfg = data as GatewayConfigFile;
  const ks = cfg.killswitch ?? {};
  const src: ReferenceSources = { env: settings.referenceEnv, baseDir: dirname(resolve(file)) };
  const problems: string[] = [];
  const findings: ProhibitedFinding[] = [];
  const ref = (value: string, where: string): string => {
    try {
      return resolveReferences(value, where, src);
    } catch (err) {
      if (err instanceof ConfigReferenceError) {
        problems.push(err.message);
        return '';
      }
      throw err;
    }
  };
  /** A credential of the config file, else the one from the environment (`fromEnv`, taken as it is). */
  const credential = (value: string | undefined, fromEnv: string | undefined, envName: string, where: string): string | undefined => {
    if (value === undefined) return fromEnv;
    if (!hasReference(value) && CREDENTIAL_PREFIX.test(value.trim())) {
      problems.push(`killswitch.${where} holds a credential in clear; write "\${env:${envName}}" or "\${file:/path}" instead`);
      return undefined;
    }
    return ref(value, `killswitch.${where}`);
  };

  const globalLimits = ks.limits ?? {};
  const upstreams: UpstreamConfig[] = [];
  for (const [name, entry] of Object.entries(cfg.mcpServers)) {
    if (entry.disabled === true) continue;
    const at = `mcpServers.${name}`;
    if (!SERVER_NAME.test(name)) {
      problems.push(`${at}: server names use letters, digits, ".", "_" and "-" (they must match the policy's server names)`);
      continue;
    }
    const hasCommand = entry.command !== undefined;
    const hasUrl = entry.url !== undefined;
    if (hasCommand === hasUrl) {
      problems.push(`${at}: give either "command" (with optional "args" and "env") or "url", not ${hasCommand ? 'both' : 'neither'}`);
      continue;
    }
    const rawArgs = entry.args ?? [];
    const rawEnv = entry.env ?? {};
    const rawHeaders = entry.headers ?? {};
    const opts = ks.servers?.[name] ?? {};
    const args = rawArgs.map((a, i) => ref(a, `${at}.args[${i}]`));
    const upstreamEnv = Object.fromEntries(Object.entries(rawEnv).map(([k, v]) => [k, ref(v, `${at}.env.${k}`)]));
    const headers = Object.fromEntries(Object.entries(rawHeaders).map(([k, v]) => [k, ref(v, `${at}.headers.${k}`)]));
    const command = entry.command !== undefined ? ref(entry.command, `${at}.command`) : undefined;
    const url = entry.url !== undefined ? ref(entry.url, `${at}.url`) : undefined;
    const cwd = entry.cwd !== undefined ? resolve(src.baseDir, expandHome(ref(entry.cwd, `${at}.cwd`))) : undefined;
    if (url !== undefined && url !== '' && !/^https?:\/\//i.test(url)) problems.push(`${at}.url: expected an http(s) URL of a Streamable HTTP MCP server`);
    const allowedDirectories = opts.allowedDirectories ? opts.allowedDirectories.map((d) => resolve(src.baseDir, expandHome(ref(d, `killswitch.servers.${name}.allowedDirectories`)))) : directoriesIn(args);

    const raw = launchOf({ command: entry.command, args: rawArgs, env: rawEnv, url: entry.url, headers: rawHeaders, allowedDirectories: opts.allowedDirectories ?? [] });
    const resolved = launchOf({ command, args, env: upstreamEnv, url, headers, allowedDirectories });
    findings.push(...prohibitedUpstreamConfig(name, raw, resolved));

    const identity: UpstreamIdentity = url !== undefined ? { url: reportedUrl(url) } : { command: command ?? '', args: rawArgs.map((a, i) => reportedArg(a, args[i] ?? '')) };
    const maxExecutionSeconds = opts.maxExecutionSeconds ?? globalLimits.maxExecutionSeconds ?? DEFAULT_MAX_EXECUTION_SECONDS;
    const upstream: UpstreamConfig = {
      name,
      transport: url !== undefined ? 'http' : 'stdio',
      args,
      env: upstreamEnv,
      headers,
      identity,
      allowedDirectories,
      limits: {
        maxResultBytes: opts.maxResultBytes ?? globalLimits.maxResultBytes ?? DEFAULT_MAX_RESULT_BYTES,
        maxRows: opts.maxRows ?? globalLimits.maxRows,
        maxExecutionMs: Math.round(maxExecutionSeconds * 1000),
      },
    };
    if (command !== undefined) upstream.command = command;
    if (url !== undefined) upstream.url = url;
    if (cwd !== undefined) upstream.cwd = cwd;
    upstreams.push(upstream);
  }
  for (const name of Object.keys(ks.servers ?? {})) {
    if (!(name in cfg.mcpServers)) problems.push(`killswitch.servers.${name}: no such server in mcpServers`);
  }
  if (upstreams.length === 0 && problems.length === 0) problems.push('mcpServers: declare at least one enabled upstream server');

  const url = ks.url !== undefined ? ref(ks.url, 'killswitch.url') : settings.killswitchUrl;
  if (url && !/^https?:\/\/[^/\s]+/i.test(url)) problems.push('killswitch.url: expected the control plane URL, e.g. http://127.0.0.1:8080');
  const tls = ks.tls ? controlPlaneTls(ks.tls, url, (value, where) => resolve(src.baseDir, expandHome(ref(value, `killswitch.tls.${where}`))), problems) : undefined;
  const gatewayKey = credential(ks.gatewayKey, settings.gatewayKey, 'KILLSWITCH_GATEWAY_KEY', 'gatewayKey');
  if (gatewayKey === undefined && !problems.some((p) => p.startsWith('killswitch.gatewayKey'))) {
    problems.push(`killswitch.gatewayKey: no gateway key; set KILLSWITCH_GATEWAY_KEY or write "gatewayKey": "\${env:NAME}" (operators issue keys at POST /v1/gateway-keys)`);
  }
  const agentToken = credential(ks.agentToken, settings.agentToken, 'KILLSWITCH_AGENT_TOKEN', 'agentToken');
  const names = new Set(upstreams.map((u) => u.name));
  for (const s of ks.session?.servers ?? []) if (!names.has(s)) problems.push(`killswitch.session.servers: "${s}" is not an enabled server in mcpServers`);

  if (problems.length > 0 || findings.length > 0) {
    throw new GatewayConfigError([...problems, ...findings.map((f) => `refused (${f.pattern}): ${f.message}`)], findings);
  }
  return {
    file,
    controlPlane: { url: url.replace(/\/+$/, ''), gatewayKey: gatewayKey as string, timeoutMs: ks.timeoutMs ?? DEFAULT_TIMEOUT_MS, ...(tls ? { tls } : {}) },
    agentToken: agentToken || undefined,
    environment: ks.environment,
    session: { readOnly: ks.session?.readOnly ?? false, servers: ks.session?.servers, purpose: ks.session?.purpose ?? '' },
    upstreams,
    http: { host: ks.http?.host ?? '127.0.0.1', port: ks.http?.port ?? DEFAULT_HTTP_PORT, path: ks.http?.path ?? '/mcp', allowedHosts: ks.http?.allowedHosts },
    metrics: ks.metrics ? { host: ks.metrics.host ?? '127.0.0.1', port: ks.metrics.port } : undefined,
    startTimeoutMs: ks.startTimeoutMs ?? 30_000,
    listTimeoutMs: ks.listTimeoutMs ?? DEFAULT_LIST_TIMEOUT_MS,
    toolReportMaxBytes: ks.toolReportMaxBytes ?? DEFAULT_TOOL_REPORT_MAX_BYTES,
    reportReuseMs: ks.reportReuseMs ?? DEFAULT_REPORT_REUSE_MS,
    approvals: {
      mode: ks.approvals?.mode ?? 'return',
      timeoutMs: Math.round((ks.approvals?.timeoutSeconds ?? DEFAULT_APPROVAL_TIMEOUT_SECONDS) * 1000),
      pollMs: Math.round((ks.approvals?.pollSeconds ?? DEFAULT_APPROVAL_POLL_SECONDS) * 1000),
    },
  };
}

/**
 * `killswitch.tls` read: its files (paths relative to the config file) loaded and checked, each problem
 * added to `problems` with the key and the path. Only for an https:// control plane: with http:// the
 * files would do nothing and the credentials would cross the network in clear.
 */
function controlPlaneTls(
  section: { caFile?: string; certFile?: string; keyFile?: string },
  url: string,
  path: (value: string, where: 'caFile' | 'certFile' | 'keyFile') => string,
  problems: string[],
): ControlPlaneTls | undefined {
  if (url && !/^https:\/\//i.test(url)) {
    problems.push(`killswitch.tls: only used with an https:// control plane URL, and killswitch.url (or KILLSWITCH_URL) is ${redactUrl(url)}`);
    return undefined;
  }
  if ((section.certFile === undefined) !== (section.keyFile === undefined)) {
    problems.push('killswitch.tls: give both certFile and keyFile (the client certificate for mutual TLS and its private key), or neither');
    return undefined;
  }
  const tls: ControlPlaneTls = {};
  const read = (where: 'caFile' | 'certFile' | 'keyFile', value: string) => {
    const file = path(value, where);
    const pem = where === 'keyFile' ? readPemFile(file, 'private key') : readPemFile(file, 'certificate');
    if ('problem' in pem) problems.push(`killswitch.tls.${where}: ${file}: ${pem.problem}`);
    return pem;
  };
  if (section.caFile !== undefined) {
    const ca = read('caFile', section.caFile);
    if (!('problem' in ca)) tls.ca = ca.pem;
  }
  if (section.certFile !== undefined && section.keyFile !== undefined) {
    const cert = read('certFile', section.certFile);
    const key = read('keyFile', section.keyFile);
    if ('certificates' in cert && 'key' in key) {
      if (cert.certificates[0]!.checkPrivateKey(key.key)) Object.assign(tls, { cert: cert.pem, key: key.pem });
      else problems.push('killswitch.tls.keyFile: not the private key of the certificate in killswitch.tls.certFile');
    }
  }
  return tls;
}

/**
 * Reads the config file. A leading `~/` (or a bare `~`) is the home directory: no shell expands it in a
 * quoted `--config '~/…'` or in a desktop client's JSON `args`.
 */
export function loadGatewayConfig(path: string, from: GatewayEnvironment): GatewayConfig {
  const file = expandHome(path);
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new GatewayConfigError([`cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`]);
  }
  return parseGatewayConfig(text, file, from);
}
