import { createHash } from 'node:crypto';
import type { Logger } from 'pino';
import { v7 as uuidv7 } from 'uuid';
import type { AlertService } from '../alerts/service.js';
import { isSecretKey, REDACTED, redactText, redactUrl, redactValue } from '../audit/redact.js';
import type { AdminAction } from '../audit/rows.js';
import { type Pool, withTransaction } from '../db/pool.js';
import { AppError, type FieldProblem, notFound } from '../errors.js';
import type { ReportedUpstream } from '../policy/check.js';
import { PROTOCOL_READS } from '../policy/resolve.js';
import { upstreamIdentitiesOf } from '../policy/resources.js';
import { keepSubscribed, type RedisHandle } from '../redis/client.js';
import { type ToolDefinition, toolHash, unstorableAt } from './hash.js';
import { MAX_TOOLS_PER_REPORT, MAX_TOOLS_PER_SERVER } from './limits.js';
import { type PinRow, REPLACED_BY, type Reporter, type ToolDefinitionRow, type ToolReporter, type ToolStatus, toolStore, type UpstreamRow } from './store.js';

export interface UpstreamIdentity {
  url?: string;
  command?: string;
  args?: string[];
}

export interface ReportedServer {
  name: string;
  identity: UpstreamIdentity;
  tools: Array<ToolDefinition & { hash?: string }>;
}

export type ToolPinStatus = 'approved' | 'changed' | 'rejected';

/** One reported definition as the control plane sees it; `refused` ones were never stored. */
export interface ToolReportResult {
  server: string;
  tool: string;
  hash: string;
  status: ToolPinStatus | 'refused';
  /** The tool_definitions row; null for a refused definition. */
  id: string | null;
  newlyChanged: boolean;
  /** The pending definition of the tool this one replaced (deleted, or superseded if a gateway still runs it). */
  replaced?: string;
  /** Why a refused definition can never be called. */
  refusal?: string;
  /** Why a stored definition that is not approved cannot be called yet (it names the definition to approve). */
  notApproved?: string;
  /** A new tool name of a server that already had pinned tools, pinned (approved) on first sight by this report. */
  added?: true;
}

/**
 * Why a reported tool name can never be a tool, or undefined. `resources/read` and `prompts/get` are
 * MCP protocol reads that resolveCall gives the read scope whatever the annotations: a gateway that
 * passed an upstream tool of that name through would let read-only tokens call it.
 */
/** The audit target of every row about one tool: pinned, changed, refused, approved or rejected. */
export function toolTarget(server: string, tool: string): string {
  return `tool:${server}/${tool}`;
}

export function refusedToolName(name: string): string | undefined {
  if (PROTOCOL_READS.has(name)) {
    return `"${name}" is an MCP protocol method, not a tool name: the definition is not pinned and no token may call it (a gateway must not pass such an upstream tool through)`;
  }
  return undefined;
}

/** What decisions need of one definition (every replica holds all of them). */
export interface PinnedDefinition {
  id: string;
  hash: string;
  status: ToolStatus;
  decided_by: string | null;
  /** The deciding operator's name, shown to agents instead of `operator:<id>`. */
  decided_by_name?: string | null;
  decision_reason: string | null;
}

interface PinEntry {
  approved: PinnedDefinition | undefined;
  byHash: Map<string, PinnedDefinition>;
  /**
   * The definition each gateway (by gateway key id) reported last: what a decision without tool_hash
   * through that gateway is judged by. Another gateway's report never changes it.
   */
  byGateway: Map<string, PinnedDefinition>;
  /** The gateways whose last report is not approved, with their names: what explain (no gateway) warns about. */
  notApprovedAt: Array<{ gateway: { id: string; name: string | null }; def: PinnedDefinition }>;
}

/** A tool definition as operators are shown it: who reported it first, and which gateways run it now. */
export type ToolDefinitionView = ToolDefinitionRow & {
  reported_by: { gateway_id: string | null; gateway_name: string | null; token_id: string | null; project_id: string | null };
  reported_last_by: ToolReporter[];
};

export interface ToolListFilter {
  status?: ToolStatus;
  server?: string;
  /** Default 1000. */
  limit?: number;
  /** An id: only definitions first seen before it. */
  before?: string;
}

const serverFull = (server: string) =>
  `server ${server} has ${MAX_TOOLS_PER_SERVER} tools pinned, the most one server may have, so tool names it reports beyond them are refused`;

/**
 * The TOOL_CHANGED alert of a definition that became pending. While a change waits, a later change of the
 * same tool replaces it (one pending definition per tool): the tool's open alert is then rewritten (the
 * new definition's id, `numbers.changes` counted up) instead of another being raised, so an upstream that
 * keeps changing a tool raises one alert, not one per report. Once that alert is acknowledged, or when no
 * change was waiting, a new alert is raised (and sent to the webhook).
 */
export function raiseToolChanged(alerts: AlertService | undefined, r: ToolReportResult): Promise<unknown> {
  if (!alerts || r.id === null) return Promise.resolve();
  const what = `${r.server}/${r.tool}`;
  const message = (changes: number) =>
    `${what} definition changed; calls deny with TOOL_CHANGED until an operator approves tool definition ${r.id}${changes > 1 ? ` (${changes} changes reported while a change waited for review; each replaced the one before, so only this latest one waits)` : ''}`;
  const alert = (changes: number) => ({ kind: 'TOOL_CHANGED' as const, severity: 'warning' as const, server: r.server, message: message(changes), numbers: { changes }, details: { tool: r.tool, definition_id: r.id, hash: r.hash } });
  if (r.replaced === undefined) return alerts.raise(alert(1));
  return alerts.raiseOrUpdate(alert(1), { server: r.server, detail: 'tool', value: r.tool }, (open) => alert((open.numbers['changes'] ?? 1) + 1));
}

/** The most TOOL_ADDED alerts one report raises per server; the names beyond share one alert. */
export const TOOL_ADDED_ALERTS_PER_REPORT = 10;

/**
 * TOOL_ADDED alerts for the tool names a server reported after its first report (`added`): pinned on first
 * sight and callable at once (trust on first use), so an upstream that adds `exfiltrate_everything` is at
 * least seen. One alert per (server, tool): a name is pinned on first sight only once (approved definitions
 * are never deleted), and a server's first report raises none (a gateway's first start pins all its
 * tools). Against a flood (an upstream listing ever new names, up to MAX_TOOLS_PER_SERVER), one report
 * raises at most TOOL_ADDED_ALERTS_PER_REPORT per server, and one more naming how many others were pinned.
 */
export async function raiseToolsAdded(
  alerts: AlertService | undefined,
  added: ReadonlyArray<{ result: ToolReportResult; capability: string | null }>,
  gateway: { id: string; name: string | null },
): Promise<void> {
  if (!alerts) return;
  const by = `gateway ${gateway.name ?? gateway.id} (${gateway.id})`;
  const servers = new Map<string, Array<{ result: ToolReportResult; capability: string | null }>>();
  for (const a of added) if (a.result.added && a.result.id !== null) servers.set(a.result.server, [...(servers.get(a.result.server) ?? []), a]);
  for (const [server, tools] of servers) {
    for (const { result: r, capability } of tools.slice(0, TOOL_ADDED_ALERTS_PER_REPORT)) {
      const cap = capability ? `capability ${capability}` : 'a capability the policy does not resolve, so its calls deny';
      const kill = capability ? `, or kill ${capability} calls on the server (killswitch kill --server ${server} --capability ${capability})` : '';
      const stop = `; to stop its calls, reject it (POST /v1/tools/${r.id}/reject, or Reject on the admin UI's Tools page)${kill}`;
      await alerts.raise({
        kind: 'TOOL_ADDED',
        server,
        message: `New tool ${server}/${r.tool} (${cap}) reported by ${by} was pinned on first sight: server ${server} already had pinned tools, and tokens allowed on it may call this one now. If you did not expect it, review tool definition ${r.id} (GET /v1/tools?server=${server})${stop}.`,
        details: { tool: r.tool, definition_id: r.id, hash: r.hash, capability, gateway_id: gateway.id, gateway_name: gateway.name },
      });
    }
    const rest = tools.slice(TOOL_ADDED_ALERTS_PER_REPORT);
    if (rest.length === 0) continue;
    const names = rest.slice(0, 20).map((a) => a.result.tool);
    await alerts.raise({
      kind: 'TOOL_ADDED',
      server,
      message: `${rest.length} more new tools of server ${server}, reported by ${by} in the same report, were pinned on first sight and may be called now: ${names.join(', ')}${rest.length > names.length ? ', ...' : ''} (GET /v1/tools?server=${server}). An upstream that suddenly lists many new tools may be compromised: consider killing the server (killswitch kill --server ${server}).`,
      numbers: { added: rest.length },
      details: { tools: names, gateway_id: gateway.id, gateway_name: gateway.name },
    });
  }
}

// Server names cannot contain "/" (schema pattern), so this key is unambiguous.
const key = (server: string, tool: string) => `${server}/${tool}`;

/** How long a refused tool name is not audited again (`tool.refused`): a gateway reports it on every tools/list. */
export const REFUSED_AUDIT_EVERY_S = 86_400;

/** How often every replica reloads the pins, besides on every announcement (one it missed is caught up). */
export const TOOLS_RELOAD_EVERY_MS = 5_000;

/** The form of a tool hash (toolHash): checked here, not by the route's schema, so a refusal can name the computed hash. */
const TOOL_HASH_FORM = /^sha256:[0-9a-f]{64}$/;

/** A hash as messages show it: the algorithm and the first 12 hex digits, enough to tell definitions apart. */
const shortHash = (hash: string): string => `${hash.slice(0, 19)}…`;

/**
 * Why calls to a definition that is not approved are refused, and what gets them through: the
 * definition's own id to approve, and for a rejected one who rejected it and why. Shared by the
 * tool-pin step (decisions, explain) and the tool report's `reason`.
 */
export function notApprovedReason(d: Pick<PinnedDefinition, 'id' | 'status' | 'decided_by' | 'decided_by_name' | 'decision_reason'>): string {
  const approve = `POST /v1/tools/${d.id}/approve`;
  switch (d.status) {
    case 'rejected':
      return `tool definition ${d.id} was rejected by ${d.decided_by_name ?? d.decided_by ?? 'an operator'}${d.decision_reason ? ` ("${d.decision_reason}")` : ''}; fix the upstream so it serves the approved definition again, or have an operator approve this one (${approve})`;
    case 'superseded':
      if (d.decided_by === REPLACED_BY) {
        return `tool definition ${d.id} changed and was replaced by a later change of the tool before an operator reviewed it; have an operator approve it (${approve}), or update the upstream to the approved definition`;
      }
      return `tool definition ${d.id} was approved once, but another definition has been approved since; have an operator approve it again (${approve}), or update the upstream to the approved definition`;
    default:
      return `tool definition ${d.id} differs from the approved one and waits for an operator to review it and approve it (${approve})`;
  }
}

const FLAG = /^--?([A-Za-z][A-Za-z0-9_.-]*)$/;
const URL_START = /^[A-Za-z][A-Za-z0-9+.-]*:\/\//;
// Path parameters (`;jsessionid=…`): redactUrl keeps the path, so secret-named ones are masked.
const URL_PARAM = /(;)([^=&#;?\s]+)=([^&#;?\s]*)/g;

/**
 * A URL as the gateway reports one (redactUrl: no user, password, query or fragment), whoever wrote the
 * gateway: any query parameter may hold a credential whatever its name (`?key=`, `?sig=`), and an
 * identity goes to alerts (ALERT_WEBHOOK_URL), the audit trail and every viewer. redactText first, so a
 * password holding an '@' or a token anywhere in the path is masked too.
 */
function maskedUrl(url: string): string {
  return redactUrl(redactText(url)).replace(URL_PARAM, (m, sep: string, name: string) => (isSecretKey(safeDecode(name)) ? `${sep}${name}=${REDACTED}` : m));
}

function safeDecode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

/**
 * An upstream identity as it is stored and shown: the audit trail's redaction (src/audit/redact.ts:
 * passwords in URLs and connection strings, secret-named key=value pairs, recognisable tokens), plus
 * URLs without user, password, query or fragment (maskedUrl), and the value after a flag with a
 * secret-looking name (`--token X`). Hosts, paths, commands and other arguments stay readable. What
 * decisions match (the production patterns) is read from the identity as reported, before masking
 * (reportedNetworkIdentities), and kept apart (gateway_upstreams): masking changes no decision.
 */
export function maskedIdentity(identity: unknown): UpstreamIdentity | null {
  if (identity === null || typeof identity !== 'object') return null;
  const src = identity as Record<string, unknown>;
  const out: UpstreamIdentity = {};
  if (typeof src['url'] === 'string') out.url = maskedUrl(src['url']);
  if (typeof src['command'] === 'string') out.command = redactText(src['command']);
  if (Array.isArray(src['args'])) {
    const raw = src['args'].filter((a): a is string => typeof a === 'string');
    const args = redactValue(raw) as string[];
    for (let i = 0; i < args.length; i++) {
      if (URL_START.test(args[i]!)) args[i] = maskedUrl(args[i]!);
      const flag = i > 0 ? FLAG.exec(raw[i - 1]!) : null;
      if (flag && isSecretKey(flag[1]!) && !raw[i]!.startsWith('-')) args[i] = REDACTED;
    }
    out.args = args;
  }
  return out;
}

/** A row as operators see it: the identity masked again (rows stored before identities were masked on the way in). */
const shown = (row: ToolDefinitionRow): ToolDefinitionRow => ({ ...row, upstream_identity: maskedIdentity(row.upstream_identity) as Record<string, unknown> | null });

/** The most network identities one server's reported identity may hold; more is a 400 naming the field. */
export const MAX_UPSTREAM_IDENTITIES = 500;

/**
 * The network identities (hosts and database names, never passwords) of the identity a gateway reports
 * for a server, read unmasked as the policy's identity is read (upstreamIdentitiesOf), sorted.
 */
export function reportedNetworkIdentities(identity: UpstreamIdentity): string[] {
  return [...upstreamIdentitiesOf(identity)].sort();
}

/** How long one UPSTREAM_MISMATCH alert (gateway, server, identities) is not raised again. */
export const UPSTREAM_MISMATCH_ALERT_EVERY_S = 30 * 86_400;

/**
 * UPSTREAM_MISMATCH when a gateway reports, for a server of the policy, network identities that the
 * policy's identity of that server does not have: the policy describes another upstream than the gateway
 * runs (a compliance review found `postgres` run against a production database while the policy said
 * localhost). Decisions already match both (checkPolicy); this tells operators the policy is wrong.
 * Once per gateway, server, reported and policy identities per UPSTREAM_MISMATCH_ALERT_EVERY_S (raiseOnce,
 * across replicas): a gateway reports on every tools/list.
 */
export async function raiseUpstreamMismatch(
  alerts: AlertService | undefined,
  gateway: { id: string; name: string | null },
  server: string,
  reported: readonly string[],
  policy: readonly string[] | undefined,
  identity: UpstreamIdentity,
): Promise<void> {
  if (!alerts || policy === undefined) return;
  const known = new Set(policy);
  const extra = reported.filter((i) => !known.has(i));
  if (extra.length === 0) return;
  const shownPolicy = [...known].sort();
  const sets = createHash('sha256').update(JSON.stringify([extra, shownPolicy])).digest('hex').slice(0, 32);
  const once = `upstream-mismatch:${gateway.id}:${server}:${sets}`;
  const by = `Gateway ${gateway.name ?? gateway.id} (${gateway.id})`;
  await alerts.raiseOnce(once, UPSTREAM_MISMATCH_ALERT_EVERY_S, {
    kind: 'UPSTREAM_MISMATCH',
    server,
    message: `${by} runs server ${server} against ${extra.join(', ')}, which the policy's identity of ${server} does not name (${shownPolicy.length > 0 ? `it names ${shownPolicy.join(', ')}` : 'it names no host or database'}): the policy describes another upstream than the gateway runs. Calls through this gateway are matched against both for the production patterns (a match is ENVIRONMENT_FORBIDDEN and halts); fix servers.${server}.identity in the policy file, or the gateway's configuration of ${server}.`,
    details: { gateway_id: gateway.id, gateway_name: gateway.name, reported_identities: extra, policy_identities: shownPolicy, identity: maskedIdentity(identity) },
  });
}

/**
 * Tool definitions pinned on first sight. A definition that changes later ("rug pull") is pending until
 * an operator approves it; decisions naming a hash other than the approved one answer TOOL_CHANGED, and
 * so do decisions naming no hash while the definition reported last is not approved.
 * Every replica holds the pins in memory (reloaded on a Redis announcement and every
 * TOOLS_RELOAD_EVERY_MS, so a missed announcement is caught up), so the check is free.
 */
export class ToolRegistry {
  private pins = new Map<string, PinEntry>();
  /** Servers with MAX_TOOLS_PER_SERVER tools pinned: a tool of theirs never pinned was refused, and denies. */
  private fullServers = new Set<string>();
  /** Per server, what each gateway reported it runs it with (network identities, gateway_upstreams). */
  private upstreams = new Map<string, ReportedUpstream[]>();
  private timer: NodeJS.Timeout | undefined;
  private unsubscribe: (() => Promise<void>) | undefined;
  private recordAdmin: ((a: AdminAction) => Promise<void>) | undefined;
  private readonly channel: string;
  /** Change announcements received; and how many of them the pins in force include. */
  private announced = 0;
  private loadedAnnounced = 0;
  /** The most announcements a failed reload should have brought: denied while the pins in force lack them. */
  private failedAnnounced = 0;
  /** Reloads started, and the latest whose pins are in force (an older reload that ends later is dropped). */
  private reloads = 0;
  private appliedReload = 0;
  /** Why the last reload failed; undefined once one succeeds. */
  private reloadError: string | undefined;
  private readonly onMessage = (channel: string) => {
    if (channel !== this.channel) return;
    this.announced++;
    void this.reload();
  };

  constructor(
    private readonly pool: Pool,
    private readonly redis: RedisHandle,
    private readonly reloadEveryMs = TOOLS_RELOAD_EVERY_MS,
    private readonly log?: Logger,
  ) {
    this.channel = redis.channel('tools:changed');
  }

  /** Where a report's pins, changes and refusals are audited (the decisions plugin wires ctx.audit.recordAdmin). */
  setAdminRecorder(record: (a: AdminAction) => Promise<void>): void {
    this.recordAdmin = record;
  }

  async start(): Promise<void> {
    this.redis.sub.on('message', this.onMessage);
    // Announcements reach this replica once Redis answers; the periodic reload covers the gap.
    this.unsubscribe = await keepSubscribed(this.redis, this.channel, () => {});
    await this.reload();
    this.timer = setInterval(() => void this.reload(), this.reloadEveryMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.redis.sub.off('message', this.onMessage);
    await this.unsubscribe?.();
  }

  /**
   * Reloads the pins from Postgres. When Postgres cannot be read the pins in force stay (a pin can only be
   * stale, never invented), but once a change was announced that they do not include, calls to reported
   * tools deny DEPENDENCY_UNAVAILABLE (unavailable()) until a reload succeeds: the change may be the
   * rejection of the very definition a gateway runs.
   */
  async reload(): Promise<void> {
    const next = new Map<string, PinEntry>();
    const reload = ++this.reloads;
    const announced = this.announced;
    let rows: PinRow[];
    let upstreamRows: UpstreamRow[];
    try {
      [rows, upstreamRows] = await Promise.all([toolStore.pins(this.pool), toolStore.upstreams(this.pool)]);
    } catch (err) {
      const first = this.reloadError === undefined;
      this.reloadError = (err as Error).message;
      this.failedAnnounced = Math.max(this.failedAnnounced, announced);
      if (first) {
        this.log?.warn(
          { err: this.reloadError, unseen_changes: this.announced - this.loadedAnnounced },
          `tool pins could not be reloaded from Postgres; ${this.announced > this.loadedAnnounced ? 'a change was announced that they do not include, so calls to reported tools deny (DEPENDENCY_UNAVAILABLE)' : 'the pins in force stay'} until a reload succeeds (retried every ${this.reloadEveryMs / 1000} s)`,
        );
      }
      return;
    }
    if (reload < this.appliedReload) return;
    const toolsOf = new Map<string, number>();
    for (const row of rows) {
      // Reasons are stored masked; one stored in clear by an earlier version is masked here, since agents
      // read it in TOOL_CHANGED messages and tool reports.
      const reason = row.decision_reason === null ? null : redactText(row.decision_reason);
      const def: PinnedDefinition = { id: row.id, hash: row.hash, status: row.status, decided_by: row.decided_by, decided_by_name: row.decided_by_name, decision_reason: reason };
      const k = key(row.server, row.tool);
      let entry = next.get(k);
      if (!entry) {
        entry = { approved: undefined, byHash: new Map(), byGateway: new Map(), notApprovedAt: [] };
        next.set(k, entry);
        toolsOf.set(row.server, (toolsOf.get(row.server) ?? 0) + 1);
      }
      entry.byHash.set(row.hash, def);
      if (row.status === 'approved') entry.approved = def;
      for (const gateway of row.reported_last_by) {
        entry.byGateway.set(gateway.id, def);
        if (row.status !== 'approved') entry.notApprovedAt.push({ gateway, def });
      }
    }
    const upstreams = new Map<string, ReportedUpstream[]>();
    for (const u of upstreamRows) {
      const entry: ReportedUpstream = { gateway: { id: u.gateway_id, name: u.gateway_name }, identities: u.network_identities };
      const list = upstreams.get(u.server);
      if (list) list.push(entry);
      else upstreams.set(u.server, [entry]);
    }
    this.pins = next;
    this.upstreams = upstreams;
    this.fullServers = new Set([...toolsOf].filter(([, n]) => n >= MAX_TOOLS_PER_SERVER).map(([server]) => server));
    this.appliedReload = reload;
    this.loadedAnnounced = Math.max(this.loadedAnnounced, announced);
    // A reload that began before the announcement a failed one was to bring (an older, slower one) does not
    // end the denial: only pins read after that announcement do.
    if (this.reloadError !== undefined && this.loadedAnnounced >= this.failedAnnounced) {
      this.reloadError = undefined;
      this.log?.info('tool pins reloaded from Postgres again');
    }
  }

  /**
   * Why a call to this tool must deny DEPENDENCY_UNAVAILABLE, or undefined: a change to the pins was
   * announced and the reload that would bring it failed. Only tools a gateway reported (or a full
   * server's), which the unseen change can concern; a tool never reported passes as before.
   */
  unavailable(server: string, tool: string): string | undefined {
    if (this.failedAnnounced <= this.loadedAnnounced) return undefined;
    if (!this.pins.has(key(server, tool)) && !this.fullServers.has(server)) return undefined;
    return `${server}/${tool}: a change to the reviewed tool definitions was announced, and this control plane could not reload them from Postgres (${this.reloadError}); calls to reported tools deny until it can (retried every ${this.reloadEveryMs / 1000} s)`;
  }

  /**
   * What the gateway (gateway key id) reported it runs this server with, for the production patterns; with
   * no gateway (explain), every gateway's report. Empty when none was reported. In memory, no round trip.
   */
  reportedUpstreams(server: string, gatewayId: string | undefined): readonly ReportedUpstream[] {
    const all = this.upstreams.get(server);
    if (!all) return [];
    if (gatewayId === undefined) return all;
    const own = all.find((u) => u.gateway.id === gatewayId);
    return own ? [own] : [];
  }

  /** Status of a tool hash named by a decision; undefined when the tool was never reported. */
  statusOf(server: string, tool: string, hash: string): ToolPinStatus | undefined {
    const entry = this.pins.get(key(server, tool));
    if (!entry) return undefined;
    if (entry.approved?.hash === hash) return 'approved';
    return entry.byHash.get(hash)?.status === 'rejected' ? 'rejected' : 'changed';
  }

  /**
   * Why a call to this tool through this gateway (gateway key id) must deny TOOL_CHANGED, or undefined.
   * With a hash: unless it is the approved definition. Without one: unless the definition THIS gateway
   * reported last is the approved one (a gateway that omits tool_hash does not get past a changed
   * definition it reported); what other gateways reported changes nothing, so no gateway, and no agent
   * token of another project, can make this gateway's calls deny (ADR 0014). A gateway that never
   * reported the tool passes while the tool has an approved definition, as a tool no gateway ever
   * reported passes: reporting tools is optional, and the pin protects only reported tools.
   * `gatewayId` undefined (explain, which has no gateway): denies when any gateway's last report is not
   * approved, naming that gateway, since a call through it would deny.
   */
  denial(server: string, tool: string, hash: string | undefined, gatewayId: string | undefined): string | undefined {
    const entry = this.pins.get(key(server, tool));
    const what = `${server}/${tool}`;
    if (!entry) return this.fullServers.has(server) ? `${what} is not pinned: ${serverFull(server)}` : undefined;
    const sendHash = 'Send tool_hash (the hash of the definition the gateway runs) to identify the definition the gateway runs';
    if (hash === undefined && gatewayId === undefined) {
      const first = entry.notApprovedAt[0];
      if (!first) return undefined;
      const others = entry.notApprovedAt.length - 1;
      return `${what} changed: the call names no tool_hash, and the definition of this tool that gateway ${first.gateway.name ?? first.gateway.id} (${first.gateway.id}) reported last is not approved, so its calls without tool_hash deny${others > 0 ? ` (and those of ${others} more gateway(s))` : ''}: ${notApprovedReason(first.def)}. ${sendHash}`;
    }
    if (hash === undefined) {
      const own = gatewayId === undefined ? undefined : entry.byGateway.get(gatewayId);
      if (own) {
        if (own.status === 'approved') return undefined;
        return `${what} changed: the call names no tool_hash, and the definition of this tool this gateway reported last is not approved: ${notApprovedReason(own)}. ${sendHash}`;
      }
      if (entry.approved) return undefined;
      return `${what} changed: the call names no tool_hash, this gateway never reported the tool, and no definition of it is approved; the gateway must report it (POST /v1/gateway/tools) so an operator can review it. ${sendHash}`;
    }
    if (entry.approved?.hash === hash) return undefined;
    const known = entry.byHash.get(hash);
    // Both hashes, named: a gateway that cached an old tools/list sends the old hash after an operator
    // approved a new definition, and must see that its hash is the stale one, not the approved one.
    const sent = `the call sent tool_hash ${shortHash(hash)}`;
    const approved = entry.approved ? `the approved definition is ${shortHash(entry.approved.hash)} (${entry.approved.id})` : 'no definition of it is approved';
    const relist = `If the upstream now serves another definition, list its tools again (tools/list), report them (POST /v1/gateway/tools) and send the hash of the definition it lists`;
    if (known) return `${what} changed since it was approved: ${sent}, ${approved}: ${notApprovedReason(known)}. ${relist}`;
    return `${what} changed since it was approved: ${sent}, which no gateway reported, and ${approved}; the gateway must report the definitions it runs (POST /v1/gateway/tools) so an operator can review them. ${relist}`;
  }

  /**
   * Records what a gateway runs; returns each tool's pin status. First sight pins; a new hash waits. A
   * definition whose name is a protocol method is answered `refused` and never stored: the rest of the
   * report still counts, so one bad upstream tool does not empty the agent's whole tool list.
   *
   * The whole report is checked before anything is written (every hash a gateway sent against its
   * definition, every string Postgres could not store): a report answered 400 changes nothing.
   * Identities are stored masked (maskedIdentity); their network identities (hosts and database names,
   * read before masking) are kept per gateway and server (gateway_upstreams, last report wins), and
   * decisions through this gateway match them against the production patterns (checkPolicy).
   */
  async report(reporter: Reporter, servers: ReportedServer[]): Promise<ToolReportResult[]> {
    const problems: FieldProblem[] = [];
    const count = servers.reduce((n, s) => n + s.tools.length, 0);
    if (count > MAX_TOOLS_PER_REPORT) {
      const problem = `the report holds ${count} tool definitions; at most ${MAX_TOOLS_PER_REPORT} (all servers together) are accepted`;
      throw new AppError('INVALID_REQUEST', `servers: ${problem}; nothing of the report was stored`, [{ field: 'servers', problem }]);
    }
    const planned: Array<{ server: ReportedServer; index: number; def: ReportedServer['tools'][number]; hash: string }> = [];
    // Each server's network identities as the gateway runs it, from the identity before masking; a server
    // named twice in one report runs with both.
    const upstreams = new Map<string, Set<string>>();
    servers.forEach((server, i) => {
      const identityProblem = unstorableAt(server.identity, `servers.${i}.identity`);
      if (identityProblem) problems.push(identityProblem);
      const reached = reportedNetworkIdentities(server.identity);
      if (reached.length > MAX_UPSTREAM_IDENTITIES) {
        problems.push({ field: `servers.${i}.identity`, problem: `reaches ${reached.length} hosts and databases; at most ${MAX_UPSTREAM_IDENTITIES} per server are accepted` });
      }
      const all = upstreams.get(server.name) ?? new Set<string>();
      for (const id of reached) all.add(id);
      upstreams.set(server.name, all);
      server.tools.forEach((def, j) => {
        const at = `servers.${i}.tools.${j}`;
        const unstorable = unstorableAt(def, at);
        if (unstorable) {
          problems.push(unstorable);
          return;
        }
        const hash = toolHash(def);
        if (def.hash !== undefined && def.hash !== hash) {
          const computed = `the control plane computed ${hash} for it (sha256: and the hex SHA-256 of its canonical JSON without hash and icons; docs/gateway.md). Leave hash out and use the one the report answers, or fix how the gateway computes it`;
          const problem = TOOL_HASH_FORM.test(def.hash)
            ? `does not match the definition of ${server.name}/${def.name}: ${computed}`
            : `is not a tool hash (sha256: and 64 lowercase hex digits) for the definition of ${server.name}/${def.name}: ${computed}`;
          problems.push({ field: `${at}.hash`, problem });
        }
        planned.push({ server, index: i, def, hash });
      });
    });
    if (problems.length > 0) {
      const first = problems[0]!;
      throw new AppError('INVALID_REQUEST', `${first.field}: ${first.problem}${problems.length > 1 ? ` (and ${problems.length - 1} more problem(s); nothing of the report was stored)` : '; nothing of the report was stored'}`, problems.slice(0, 100));
    }

    // Before the pins: a report whose upstreams could not be recorded pins nothing new either.
    // Whether the pins every replica holds changed: a report that repeats what its gateway reported last
    // (every tools/list of every agent sends one) reloads and announces nothing.
    let changed = await toolStore.recordUpstreams(this.pool, reporter.gatewayId, [...upstreams].map(([server, ids]) => ({ server, identities: [...ids].sort() })));
    const identities = servers.map((s) => maskedIdentity(s.identity));
    // Read before anything of this report is stored: a tool pinned on first sight is `added` (TOOL_ADDED)
    // only on a server that had tools before, never on a server's first report.
    const knownServers = await toolStore.serversWithTools(this.pool, [...new Set(servers.map((s) => s.name))]);
    const out: ToolReportResult[] = [];
    // What the report changed, for the audit trail: a re-report of a known definition changes nothing.
    const audited: AdminAction[] = [];
    const refused: AdminAction[] = [];
    const change = (action: string, server: string, tool: string, details: Record<string, unknown>): AdminAction => ({
      actor: `gateway:${reporter.gatewayId}`,
      action,
      target: toolTarget(server, tool),
      projectId: reporter.projectId,
      details: { ...details, token_id: reporter.tokenId, gateway_id: reporter.gatewayId },
    });
    // What this gateway reported last and reports again unchanged needs no transaction per tool: one
    // query finds them (a report of 1,000 unchanged tools took ~1.7 s of transactions, near a gateway's
    // 2 s timeout, on every tools/list).
    const unchanged = await toolStore.unchangedReports(
      this.pool,
      reporter.gatewayId,
      planned.map((p) => ({ server: p.server.name, tool: p.def.name, hash: p.hash })),
    );
    for (const { server, index, def, hash } of planned) {
      const refusal = refusedToolName(def.name);
      if (refusal) {
        out.push({ server: server.name, tool: def.name, hash, status: 'refused', id: null, newlyChanged: false, refusal });
        refused.push(change('tool.refused', server.name, def.name, { hash, reason: 'protocol_method' }));
        continue;
      }
      const known = unchanged.get(key(server.name, def.name));
      const recorded = known
        ? { row: known, inserted: false, reopened: false, reportChanged: false }
        : await withTransaction(this.pool, async (db) => {
            await db.query('SELECT pg_advisory_xact_lock(hashtext($1))', [key(server.name, def.name)]);
            return toolStore.record(db, { id: uuidv7(), server: server.name, tool: def.name, hash, definition: def, reporter, identity: identities[index] }, MAX_TOOLS_PER_SERVER);
          });
      if (recorded === 'server-full') {
        out.push({ server: server.name, tool: def.name, hash, status: 'refused', id: null, newlyChanged: false, refusal: `the definition is not pinned and no token may call it: ${serverFull(server.name)}` });
        refused.push(change('tool.refused', server.name, def.name, { hash, reason: 'server_full', max_tools_per_server: MAX_TOOLS_PER_SERVER }));
        continue;
      }
      const { row, inserted, reopened, replaced } = recorded;
      if (inserted || reopened || replaced !== undefined || recorded.reportChanged) changed = true;
      if (inserted && row.status === 'approved') {
        audited.push(change('tool.pinned', server.name, def.name, { definition_id: row.id, hash, status: 'approved', decided_by: 'first-sight' }));
      } else if ((inserted && row.status === 'pending') || reopened) {
        audited.push(change('tool.changed', server.name, def.name, { definition_id: row.id, hash, status: 'pending', ...(reopened ? { reopened: true } : {}), ...(replaced ? { replaced } : {}) }));
      }
      const status: ToolPinStatus = row.status === 'approved' ? 'approved' : row.status === 'rejected' ? 'rejected' : 'changed';
      const result: ToolReportResult = { server: server.name, tool: def.name, hash, status, id: row.id, newlyChanged: (inserted && row.status === 'pending') || reopened };
      if (replaced !== undefined) result.replaced = replaced;
      if (inserted && row.status === 'approved' && knownServers.has(server.name)) result.added = true;
      if (status !== 'approved') {
        const name = status === 'rejected' ? await toolStore.operatorName(this.pool, row.decided_by).catch(() => undefined) : undefined;
        result.notApproved = notApprovedReason({ ...row, decided_by_name: name ?? null });
      }
      out.push(result);
    }
    if (changed) {
      await this.reload();
      await this.redis.redis.publish(this.channel, '1').catch(() => {});
    }
    await this.audit(audited, refused);
    return out;
  }

  /**
   * The report's rows, awaited together (one group commit): `tool.pinned` for a definition trusted on
   * first sight, `tool.changed` for one now waiting for review. After the pins are committed: a row the
   * audit trail cannot take is logged by it (`audit row for an admin action could not be written`) and the
   * report is answered as usual, as a gateway re-reporting could not make the row again. `tool.refused`
   * once per tool name and REFUSED_AUDIT_EVERY_S across replicas (Redis), since nothing is stored that
   * would tell a refused name's re-report from its first; written every time while Redis is unavailable.
   */
  private async audit(changes: AdminAction[], refused: AdminAction[]): Promise<void> {
    const record = this.recordAdmin;
    if (!record || changes.length + refused.length === 0) return;
    const fresh = await Promise.all(
      refused.map((a) =>
        this.redis.redis
          .set(this.redis.key('tools', 'refused-audited', a.target ?? ''), '1', 'EX', REFUSED_AUDIT_EVERY_S, 'NX')
          .then((r) => r === 'OK')
          .catch(() => true),
      ),
    );
    await Promise.all([...changes, ...refused.filter((_, i) => fresh[i])].map((a) => record(a).catch(() => {})));
  }

  async list(f: ToolListFilter): Promise<ToolDefinitionRow[]> {
    return (await toolStore.list(this.pool, f)).map(shown);
  }

  /**
   * One page of list(), newest first, with who reported each definition first and which gateways
   * reported it last (operators' GET /v1/tools). `next_cursor` (pass it as `cursor`) is null on the last page.
   */
  async listWithReporters(f: ToolListFilter & { limit: number; cursor?: string }): Promise<{ tools: ToolDefinitionView[]; next_cursor: string | null }> {
    const { cursor, ...filter } = f;
    const rows = await this.list({ ...filter, limit: f.limit + 1, ...(cursor === undefined ? {} : { before: cursor }) });
    const page = rows.slice(0, f.limit);
    return { tools: await this.withReporters(page), next_cursor: rows.length > f.limit ? page[page.length - 1]!.id : null };
  }

  async withReporters(rows: ToolDefinitionRow[]): Promise<ToolDefinitionView[]> {
    const ids = rows.map((r) => r.id);
    const firstBy = [...new Set(rows.map((r) => r.reported_by_gateway).filter((g): g is string => g !== null))];
    const [last, names] = await Promise.all([toolStore.reporters(this.pool, ids), toolStore.gatewayNames(this.pool, firstBy)]);
    return rows.map((r) => ({
      ...r,
      reported_by: { gateway_id: r.reported_by_gateway, gateway_name: r.reported_by_gateway === null ? null : (names.get(r.reported_by_gateway) ?? null), token_id: r.reported_by_token, project_id: r.reported_by_project },
      reported_last_by: last.get(r.id) ?? [],
    }));
  }

  async decide(id: string, status: 'approved' | 'rejected', by: string, reason: string): Promise<ToolDefinitionRow> {
    const row = await withTransaction(this.pool, async (db) => {
      const existing = await toolStore.get(db, id);
      if (!existing) throw notFound('tool definition');
      await db.query('SELECT pg_advisory_xact_lock(hashtext($1))', [key(existing.server, existing.tool)]);
      const decided = await toolStore.decide(db, id, status, by, reason);
      if (!decided) {
        // Named as read under the lock: the status read before it may be one a decision at once has changed
        // since (two approves at once: the loser's first read still said pending).
        const current = await toolStore.get(db, id);
        if (!current) throw notFound('tool definition');
        throw new AppError('CONFLICT', `tool definition ${id} is ${current.status}: ${status === 'approved' ? 'only a pending, rejected or superseded definition can be approved' : 'only a pending or approved definition can be rejected'}`);
      }
      return decided;
    });
    await this.reload();
    await this.redis.redis.publish(this.channel, '1').catch(() => {});
    return shown(row);
  }
}
