import { StdioServerTransport } from '@modelcontextprotocol/sdk/server/stdio.js';
import type { Transport } from '@modelcontextprotocol/sdk/shared/transport.js';
import type { Prompt, Resource, ResourceTemplate, Tool } from '@modelcontextprotocol/sdk/types.js';
import { ErrorCode } from '@modelcontextprotocol/sdk/types.js';
import type { Logger } from 'pino';
import { RepeatedLog } from '../log-repeats.js';
import { AgentSession, type AgentSessionOptions } from './agent-session.js';
import { AgentRequestError } from './calls.js';
import { type CatalogTool, fitReport, listedTool, maxToolBytes, mergeTools, NAMESPACE_SEPARATOR, type ReportedTool, reportLimits } from './catalog.js';
import { type GatewayConfig, GatewayConfigError } from './config.js';
import { ControlPlaneClient, ControlPlaneError, type DeclaredScope, failureWords, logText, type ToolReportAnswer } from './control-plane.js';
import { type HttpFront, listenHttp } from './http.js';
import { GatewayMetrics, type GatewayMetricsListener, listenMetrics } from './metrics.js';
import { Upstream, UpstreamUnavailableError } from './upstream.js';

// The reference MCP gateway: upstream servers behind one MCP server, every call decided by the
// control plane. Upstream processes are shared by every agent connected to this gateway.

const key = (server: string, tool: string, hash: string) => `${server}\u0000${tool}\u0000${hash}`;
/** An agent's last tools/list found no control plane (no list at all). */
const UNAVAILABLE = 'unavailable';
/** The slowest the gateway re-reports while an agent waits for its list to grow. */
const MAX_REFRESH_MS = 30_000;
/** A tool report made for agents' lists, shared by the lists of its token (Gateway.listReport). */
interface ListReport {
  /** `Gateway.reportVersion` when it was made: what it reported. */
  version: number;
  answer: Promise<ToolReportAnswer>;
  /** When the control plane answered (undefined while in flight). */
  answeredAt: number | undefined;
  /** The lists each agent was answered from it: a list an agent makes again reports again. */
  served: Map<AgentSession, Set<ListKind>>;
}
/**
 * A resource URI or prompt name the gateway does not know sends it to list the upstreams again (it may be
 * new): at most once per this, one listing at a time, however many agents ask. Otherwise every read of a
 * made-up URI (an agent's loop, a hostile one) cost a list request to every upstream.
 */
export const RELIST_ON_MISS_MS = 1_000;
type ListKind = 'tools' | 'resources' | 'resource templates' | 'prompts';
const fingerprintOf = (tools: readonly Tool[]) => JSON.stringify([...tools].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0)));

/**
 * What an agent reads when its list gets no answer from the control plane: the code first. A 429 (the
 * token's tool reports are over their limit, TOO_MANY_TOOL_REPORTS) is RATE_LIMITED, as a decision over
 * a limit is: the control plane's message says when to retry.
 */
function listError(kind: string, err: unknown): AgentRequestError {
  const message = (err as Error).message;
  // The code at the start of the message and in error.data.code, as every JSON-RPC error of the gateway.
  if (err instanceof ControlPlaneError && err.status === 429) return new AgentRequestError(ErrorCode.InternalError, `RATE_LIMITED: cannot list ${kind} now: the control plane refused the tool report (${message})`, { code: 'RATE_LIMITED' });
  const code = err instanceof ControlPlaneError && err.failure === 'unauthenticated' ? 'UNAUTHENTICATED' : 'DEPENDENCY_UNAVAILABLE';
  return new AgentRequestError(ErrorCode.InternalError, `${code}: cannot list ${kind} without the control plane (${message})`, { code });
}

export class GatewayStartError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'GatewayStartError';
  }
}

export class Gateway {
  readonly controlPlane: ControlPlaneClient;
  /** This gateway's Prometheus metrics (src/gateway/metrics.ts): on the HTTP front, or `killswitch.metrics`' listener. */
  readonly metrics = new GatewayMetrics();
  private metricsListener: GatewayMetricsListener | undefined;
  private readonly ups = new Map<string, Upstream>();
  private catalog = new Map<string, CatalogTool>();
  private readonly sessions = new Set<AgentSession>();
  /** The sessions of each agent token: a report's answer concerns only its token's agents (announce). */
  private readonly sessionsByToken = new Map<string, Set<AgentSession>>();
  /** Report answers already announced to their token's agents (announce): once per answer, not per list. */
  private readonly announced = new WeakSet<ToolReportAnswer>();
  /**
   * Per upstream, its tools/list under way and the one queued after it (readTools): every agent's
   * tools/list re-reads the upstreams, and 500 agents listing together made 500 reads of each at once.
   */
  private readonly toolReads = new Map<Upstream, { running: Promise<boolean>; queued: Promise<boolean> | undefined }>();
  private readonly resourceOwners = new Map<string, string>();
  private promptIndex = new Map<string, { server: string; name: string }>();
  /** Resource URIs two upstreams listed: hidden, and never read, for as long as the gateway runs. */
  private readonly contestedUris = new Set<string>();
  /** The tool re-read under way for an upstream that said its tools changed (upstreamListChanged). */
  private readonly toolRefreshes = new Map<Upstream, { again: boolean; done: Promise<void> }>();
  /** The listing an unknown URI or prompt name started, and when the last one ended (relistOnMiss). */
  private readonly missLists: Record<'resources' | 'prompts', { endedAt: number; pending: Promise<void> | undefined }> = {
    resources: { endedAt: Number.NEGATIVE_INFINITY, pending: undefined },
    prompts: { endedAt: Number.NEGATIVE_INFINITY, pending: undefined },
  };
  /** Keys of the collision warnings logged already (warnOnce). */
  private readonly warned = new Set<string>();
  private closed = false;
  /** The close in progress or done: a second caller waits for it (a stop while the start closes). */
  private closing: Promise<void> | undefined;
  private refreshTimer: NodeJS.Timeout | undefined;
  private refreshDelayMs: number;
  private refreshing = false;
  /** The lists each upstream failed last time (`<server>\0<kind>` → why): warned once per spell, not per list. */
  private readonly failingLists = new Map<string, string>();
  /** The last report per agent token for its lists (listReport). */
  private readonly listReports = new Map<string, ListReport>();
  /** Moves whenever what `report` would send changes (a definition, an upstream's tools left out or back). */
  private reportVersion = 0;
  /**
   * Failures to reach the control plane, shared by every agent: while it is away each call and list fails
   * the same way, and one warn line per call was a line per tool call of every agent (an agent in a retry
   * loop: hundreds a second). The first of each kind is logged at once, the rest counted (`repeats`).
   */
  private readonly controlPlaneFailures = new RepeatedLog();

  private constructor(
    readonly config: GatewayConfig,
    readonly log: Logger,
  ) {
    this.controlPlane = new ControlPlaneClient(config.controlPlane, this.metrics.observeControlPlane);
    this.metrics.watch({ agentSessions: () => this.sessions.size, upstreams: () => this.ups.values() });
    this.refreshDelayMs = config.approvals.pollMs;
  }

  /**
   * Starts every upstream (all or none), reads their tools and, when the config names an agent token,
   * reports identities and tool definitions to the control plane. Tokens of HTTP agents report on
   * their first tools/list. `signal` gives the start up (the gateway is stopping): the upstreams already
   * started or starting are closed, their processes stopped, and the start rejects.
   */
  static async start(config: GatewayConfig, log: Logger, opts: { signal?: AbortSignal } = {}): Promise<Gateway> {
    const g = new Gateway(config, log);
    const giveUp = () => void g.close();
    opts.signal?.addEventListener('abort', giveUp, { once: true });
    try {
      if (opts.signal?.aborted) throw new GatewayStartError('gateway start given up: the gateway is stopping');
      await Promise.all(
        config.upstreams.map(async (u) => {
          const upstream = new Upstream(u, log);
          g.ups.set(u.name, upstream);
          upstream.onListChanged = (kind) => void g.upstreamListChanged(upstream, kind);
          try {
            await upstream.connect(config.startTimeoutMs);
          } catch (err) {
            // Named as reported to the control plane (identity): the resolved args and URL may hold secrets.
            // fetch quotes the URL in some errors ("Request cannot be constructed from a URL that includes credentials: <url>").
            const launch = u.identity.url ?? [u.identity.command, ...(u.identity.args ?? [])].join(' ');
            const why = u.url ? (err as Error).message.replaceAll(u.url, launch) : (err as Error).message;
            throw new GatewayStartError(`upstream ${u.name} did not start (${launch}): ${why}`);
          }
        }),
      );
      g.rebuildCatalog();
      if (config.agentToken) {
        const answer = await g
          .report(config.agentToken)
          .catch((err: Error) => log.warn({ err: logText(err) }, 'could not report tool definitions to the control plane; tools/list reports again'));
        for (const s of answer?.servers ?? []) {
          if (!s.in_policy) log.warn({ server: s.name }, `upstream server ${s.name} is not in the control plane's policy: its tools are not shown to agents and a call to it is denied UNKNOWN_SERVER`);
        }
      }
      if (opts.signal?.aborted) throw new GatewayStartError('gateway start given up: the gateway is stopping');
      log.info({ servers: config.upstreams.map((u) => u.name), tools: g.catalog.size }, 'gateway started');
    } catch (err) {
      await g.close();
      throw err;
    } finally {
      opts.signal?.removeEventListener('abort', giveUp);
    }
    return g;
  }

  /** Agents connected now (stdio, HTTP sessions, in-memory). */
  get agentCount(): number {
    return this.sessions.size;
  }

  get serverNames(): string[] {
    return [...this.ups.keys()];
  }

  hasCapability(kind: 'resources' | 'prompts'): boolean {
    return [...this.ups.values()].some((u) => u.capabilities?.[kind] !== undefined);
  }

  upstream(name: string): Upstream {
    const u = this.ups.get(name);
    if (!u) throw new Error(`no upstream ${name}`);
    return u;
  }

  /** Every tool the gateway knows by the name the agent calls, callable or not. */
  tool(exposedName: string): CatalogTool | undefined {
    return this.catalog.get(exposedName);
  }

  get tools(): CatalogTool[] {
    return [...this.catalog.values()];
  }

  /**
   * Reports the current definitions with this agent token: which tools it may call, which changed. Only
   * the definitions the catalog can show are reported: a hidden one is never pinned. Those of an
   * upstream whose last tools/list failed or timed out (`toolsUnlisted`) are left out, so not shown.
   * The catalog fits the report (`fitReport`): the control plane does not refuse it for its size or count.
   */
  report(agentToken: string): Promise<ToolReportAnswer> {
    const shown = new Map<string, ReportedTool[]>();
    for (const t of this.catalog.values()) {
      if (this.ups.get(t.server)?.toolsUnlisted !== undefined) continue;
      shown.set(t.server, [...(shown.get(t.server) ?? []), t.definition]);
    }
    return this.controlPlane.reportTools(
      agentToken,
      [...this.ups.values()].map((u) => ({ name: u.name, identity: u.config.identity, tools: shown.get(u.name) ?? [] })),
    );
  }

  /**
   * The control plane's answer for an agent's list. An agent that connects lists its tools, resources,
   * templates and prompts at once, and one listing in a loop would cost a report each time (the control
   * plane limits them per token: TOO_MANY_TOOL_REPORTS). So the lists of one token share the report in
   * flight, and its answer serves that token's lists for `reportReuseMs` (1 s) as long as the gateway
   * would report the same (`reportVersion`: after an upstream's tools changed, the next list reports
   * them), except a list the same agent already made from it (a repeated tools/list reports again). A failure is not kept: the next list asks again (fail closed, and a control plane that
   * answers again is seen at once). Reports that must be fresh (an upstream's change, the refresh of a
   * waiting agent) call `report` itself.
   */
  private listReport(session: AgentSession, list: ListKind): Promise<ToolReportAnswer> {
    const now = Date.now();
    const reusable = (r: ListReport) => r.answeredAt === undefined || now - r.answeredAt < this.config.reportReuseMs;
    const kept = this.listReports.get(session.agentToken);
    if (kept && kept.version === this.reportVersion && reusable(kept)) {
      const served = kept.served.get(session) ?? new Set<ListKind>();
      // In flight: shared by every list. Answered: not to a list this agent already made from it, which
      // asks again on purpose (after an approval, say) and must see what the control plane says now.
      if (kept.answeredAt === undefined || !served.has(list)) {
        kept.served.set(session, served.add(list));
        return kept.answer;
      }
    }
    // Tokens of HTTP agents come and go: answers past their time are dropped here, not left to pile up.
    for (const [token, r] of this.listReports) if (!reusable(r)) this.listReports.delete(token);
    const agentToken = session.agentToken;
    const entry: ListReport = { version: this.reportVersion, answer: this.report(agentToken), answeredAt: undefined, served: new Map([[session, new Set([list])]]) };
    this.listReports.set(agentToken, entry);
    entry.answer.then(
      () => {
        entry.answeredAt = Date.now();
      },
      () => {
        if (this.listReports.get(agentToken) === entry) this.listReports.delete(agentToken);
      },
    );
    return entry.answer;
  }

  /**
   * tools/list for one agent: upstream lists re-read, definitions reported, and only the tools this
   * token may call in this session shown (`viewOf`). Without an answer from the control plane nothing
   * is shown (fail closed). What the agent was shown is kept, so that it is told of a later change.
   */
  async listTools(session: AgentSession): Promise<Tool[]> {
    await this.refreshTools();
    let answer: ToolReportAnswer;
    try {
      answer = await this.listReport(session, 'tools');
    } catch (err) {
      const unauthenticated = err instanceof ControlPlaneError && err.failure === 'unauthenticated';
      this.logControlPlaneFailure('list tools', err, 'the tool report');
      // The agent now holds no list: once the control plane answers again, it is told to list again.
      session.toolsShown = { fingerprint: UNAVAILABLE, waiting: !unauthenticated };
      this.refreshSoon();
      throw listError('tools', err);
    }
    const view = this.viewOf(answer, session.scope);
    session.toolsShown = { fingerprint: fingerprintOf(view.tools), waiting: view.waiting };
    // The same answer holds for the token's other agents: tell them if theirs changed.
    await this.announce(session.agentToken, answer, session);
    this.refreshSoon();
    return view.tools;
  }

  /**
   * What one session may see of a report answer: callable for the token (the exact definition: server,
   * name *and* hash, or the name alone would let another definition through), of a server the session
   * declared, and in a read-only session a read (the control plane's `capability`; unknown counts as a
   * write). Listing a tool whose call halts the session (UNAUTHORIZED_SERVER, WRITE_IN_READ_SESSION)
   * would lay a trap the agent cannot see. `waiting`: a tool it would see waits for an operator
   * (changed or rejected), or an upstream it declared failed its last tools/list, so the list may grow
   * without any upstream saying so.
   */
  private viewOf(answer: ToolReportAnswer, scope: DeclaredScope): { tools: Tool[]; waiting: boolean } {
    const callable = new Set<string>();
    const declared = scope.servers ? new Set(scope.servers) : undefined;
    let waiting = [...this.ups.values()].some((u) => u.toolsUnlisted !== undefined && (!declared || declared.has(u.name)));
    for (const s of answer.servers) {
      if (declared && !declared.has(s.name)) continue;
      for (const t of s.tools) {
        const inScope = !scope.read_only || t.capability === 'read';
        if (t.callable && inScope) callable.add(key(s.name, t.name, t.hash));
        else if (inScope && (t.status === 'changed' || t.status === 'rejected')) waiting = true;
      }
    }
    return { tools: this.tools.filter((t) => callable.has(key(t.server, t.name, t.definition.hash))).map(listedTool), waiting };
  }

  /**
   * Tells each agent of this token whose visible tools differ from what it was last shown or told
   * (`notifications/tools/list_changed`), once per change. Agents that never listed are left alone.
   */
  private async announce(agentToken: string, answer: ToolReportAnswer, except?: AgentSession): Promise<void> {
    // The lists of a token share one answer (listReport): announced at its first list, it has nothing to
    // tell at the others. Announcing it at each made N lists cost N × N views (500 agents: 250,000).
    if (this.announced.has(answer)) return this.scheduleRefresh();
    this.announced.add(answer);
    // Agents of one scope see the same tools: one view per scope, not per agent.
    const views = new Map<string, { fingerprint: string; waiting: boolean }>();
    for (const s of this.sessionsByToken.get(agentToken) ?? []) {
      if (s === except || !s.toolsShown) continue;
      const scope = s.scope;
      const scopeKey = JSON.stringify(scope);
      let seen = views.get(scopeKey);
      if (!seen) {
        const view = this.viewOf(answer, scope);
        seen = { fingerprint: fingerprintOf(view.tools), waiting: view.waiting };
        views.set(scopeKey, seen);
      }
      const changed = seen.fingerprint !== s.toolsShown.fingerprint;
      s.toolsShown = { ...seen };
      if (changed) await s.server.sendToolListChanged().catch(() => {});
    }
    // A tool that now waits for an operator (an upstream changed it) is looked for without a tools/list.
    this.scheduleRefresh();
  }

  /**
   * While an agent's list may grow without an upstream saying so (its last tools/list found no control
   * plane, or a tool it would see waits for an operator's approval), the gateway repeats the report
   * tools/list makes: every `approvals.pollSeconds` at first, doubling up to 30 s, again from the start
   * on each tools/list. Nothing is polled otherwise, and nothing per call.
   */
  private refreshSoon(): void {
    clearTimeout(this.refreshTimer);
    this.refreshTimer = undefined;
    this.refreshDelayMs = this.config.approvals.pollMs;
    this.scheduleRefresh();
  }

  private scheduleRefresh(): void {
    if (this.closed || this.refreshTimer || !this.anyWaiting()) return;
    const delay = this.refreshDelayMs;
    this.refreshDelayMs = Math.min(delay * 2, MAX_REFRESH_MS);
    this.refreshTimer = setTimeout(() => void this.refreshViews(), delay);
    this.refreshTimer.unref();
  }

  private anyWaiting(): boolean {
    for (const s of this.sessions) if (s.toolsShown?.waiting) return true;
    return false;
  }

  private async refreshViews(): Promise<void> {
    this.refreshTimer = undefined;
    // One at a time: a slow control plane must not pile refreshes up; the running one schedules the next.
    if (this.refreshing) return;
    this.refreshing = true;
    try {
      // An upstream whose tools/list failed is asked again first: once it answers, its tools are reported.
      if ([...this.ups.values()].some((u) => u.toolsUnlisted !== undefined)) await this.refreshTools((u) => u.toolsUnlisted !== undefined);
      const tokens = new Set([...this.sessions].filter((s) => s.toolsShown?.waiting).map((s) => s.agentToken));
      for (const token of tokens) {
        if (this.closed) return;
        await this.report(token).then(
          (answer) => this.announce(token, answer),
          (err: Error) => {
            this.log.debug({ err: logText(err) }, 'tool list refresh: no answer from the control plane');
            // A refused token (revoked, or a wrong gateway key) does not come back by waiting.
            if (!(err instanceof ControlPlaneError && err.failure === 'unauthenticated')) return;
            for (const s of this.sessions) if (s.agentToken === token && s.toolsShown) s.toolsShown = { ...s.toolsShown, waiting: false };
          },
        );
      }
    } finally {
      this.refreshing = false;
      this.scheduleRefresh();
    }
  }

  /**
   * What agents may be shown of the upstreams' tools: merged (`mergeTools`: a definition the control
   * plane would refuse is hidden), then cut to what one tool report carries (`fitReport`, shared fairly
   * between the upstreams). A hidden tool is never reported, and a call to it is UNKNOWN_TOOL.
   */
  private rebuildCatalog(): void {
    this.reportVersion++;
    const limits = reportLimits(this.config.toolReportMaxBytes);
    const hidden = (h: { server: string; name: string; reason: string; message: string }) =>
      this.log.warn({ server: h.server, tool: h.name, reason: h.reason }, `upstream tool hidden from agents: ${h.message}`);
    const merged = mergeTools(
      [...this.ups.values()].map((u) => ({ name: u.name, tools: u.tools })),
      hidden,
      maxToolBytes(limits.maxBytes),
    );
    this.catalog = fitReport(
      merged,
      [...this.ups.values()].map((u) => ({ name: u.name, identity: u.config.identity })),
      limits,
      hidden,
    );
  }

  /**
   * Re-reads the tool lists of the upstreams (those `which` picks), each within `listTimeoutMs`, all at
   * once; true when what the report holds changed: a definition, or an upstream's tools left out or back.
   * A down upstream keeps its last list (its calls answer UPSTREAM_UNAVAILABLE). One whose tools/list
   * fails or is not answered in time is left out (`Upstream.toolsUnlisted`) until it answers one.
   */
  private async refreshTools(which: (u: Upstream) => boolean = () => true): Promise<boolean> {
    const ups = [...this.ups.values()].filter(which);
    const unlistedBefore = ups.map((u) => u.toolsUnlisted !== undefined);
    const changed = await Promise.all(
      ups.map((u) =>
        this.readTools(u).then(
          (c) => {
            this.listAnswered(u, 'tools');
            return c;
          },
          (err: Error) => {
            if (err instanceof UpstreamUnavailableError) this.log.warn({ server: u.name, err: err.message }, 'could not re-read upstream tools; keeping the last list');
            else this.listFailed(u, 'tools', err);
            return false;
          },
        ),
      ),
    );
    if (changed.some(Boolean)) this.rebuildCatalog();
    const unlistedChanged = ups.some((u, i) => (u.toolsUnlisted !== undefined) !== unlistedBefore[i]);
    // An upstream's tools left out or back change the report without a new catalog.
    if (unlistedChanged) this.reportVersion++;
    return changed.some(Boolean) || unlistedChanged;
  }

  /**
   * One tools/list of `u`, shared: a read already queued is joined; while one runs, one more is queued
   * behind it for everyone who asks meanwhile (it starts after they asked, so it sees any change they
   * expect). At most two reads per upstream, however many agents list at once.
   */
  private readTools(u: Upstream): Promise<boolean> {
    const state = this.toolReads.get(u);
    if (state?.queued) return state.queued;
    const start = (): Promise<boolean> => {
      const read = u.refreshTools(this.config.listTimeoutMs);
      const entry = { running: read, queued: undefined };
      this.toolReads.set(u, entry);
      const done = () => {
        if (this.toolReads.get(u) === entry && !entry.queued) this.toolReads.delete(u);
      };
      read.then(done, done);
      return read;
    };
    if (!state) return start();
    const queued = state.running.then(
      () => {},
      () => {},
    ).then(start);
    state.queued = queued;
    return queued;
  }

  /** What a failed list of `kind` means for the agents, as the warning says it. */
  private static readonly LEFT_OUT: Record<'tools' | 'resources' | 'resource templates' | 'prompts', string> = {
    tools: 'its tools are left out of tools/list and its calls answer UPSTREAM_UNAVAILABLE until it lists them again',
    resources: 'its resources are left out of resources/list until it answers again',
    'resource templates': 'its resource templates are left out of resources/templates/list until it answers again',
    prompts: 'its prompts are left out of prompts/list until it answers again',
  };

  /** An upstream's list failed or timed out: a warning naming it, once until it answers again (then debug). */
  private listFailed(u: Upstream, kind: keyof typeof Gateway.LEFT_OUT, err: unknown): void {
    const key = `${u.name}\u0000${kind}`;
    const why = err instanceof Error ? err.message : String(err);
    const again = this.failingLists.has(key);
    this.failingLists.set(key, why);
    const line = { server: u.name, list: kind, err: why };
    if (again) this.log.debug(line, `upstream ${kind} list failed again; ${Gateway.LEFT_OUT[kind]}`);
    else this.log.warn(line, `${why}: ${Gateway.LEFT_OUT[kind]}`);
  }

  private listAnswered(u: Upstream, kind: keyof typeof Gateway.LEFT_OUT): void {
    if (this.failingLists.delete(`${u.name}\u0000${kind}`)) this.log.info({ server: u.name, list: kind }, `upstream ${u.name} answers its ${kind} list again`);
  }

  /**
   * One list of each of `ups`, asked at once, each bounded by `listTimeoutMs`: one that fails or is not
   * answered in time contributes nothing (warned), so no upstream fails or holds up the others' lists.
   * In `ups` order.
   */
  private async eachList<T>(kind: 'resources' | 'resource templates' | 'prompts', ups: readonly Upstream[], read: (u: Upstream, timeoutMs: number) => Promise<T[]>): Promise<Array<{ upstream: Upstream; items: T[] }>> {
    return Promise.all(
      ups.map((u) =>
        read(u, this.config.listTimeoutMs).then(
          (items) => {
            this.listAnswered(u, kind);
            return { upstream: u, items };
          },
          (err: unknown) => {
            this.listFailed(u, kind, err);
            return { upstream: u, items: [] as T[] };
          },
        ),
      ),
    );
  }

  /** The upstreams a session declared (every one without a scope), of those in `readable` when given. */
  private declaredUpstreams(scope?: DeclaredScope, readable?: ReadonlySet<string>): Upstream[] {
    const declared = scope?.servers ? new Set(scope.servers) : undefined;
    return [...this.ups.values()].filter((u) => (!declared || declared.has(u.name)) && (!readable || readable.has(u.name)));
  }

  /**
   * The servers whose resources (or prompts) this session's token may read, in the control plane's
   * answer to a tool report (`resources` / `prompts` of each server: the static part of the decision a
   * read would get). Listing is no decision, so without this an agent would see what it may not read: a
   * revoked token kept listing over an HTTP session it opened before, and a role saw the resources of
   * servers it is not allowed. Without an answer nothing is listed (fail closed).
   */
  async readableServers(session: AgentSession, kind: 'resources' | 'prompts', list: ListKind = kind): Promise<Set<string>> {
    let answer: ToolReportAnswer;
    try {
      answer = await this.listReport(session, list);
    } catch (err) {
      this.logControlPlaneFailure(`list ${kind}`, err, 'the tool report');
      throw listError(kind, err);
    }
    // A control plane that does not say (an older version) lists nothing.
    return new Set(answer.servers.filter((s) => s[kind]?.callable === true).map((s) => s.name));
  }

  /** An upstream said its list changed: re-read, report the new definitions, tell every agent. */
  private async upstreamListChanged(upstream: Upstream, kind: 'tools' | 'prompts'): Promise<void> {
    if (this.closed) return;
    if (kind === 'prompts') {
      this.promptIndex = new Map();
      for (const s of this.sessions) await s.server.sendPromptListChanged().catch(() => {});
      return;
    }
    // A burst of list_changed from one upstream (200 of them made 200 re-reads of every upstream): one
    // re-read of that upstream at a time, and one more after it when more came meanwhile.
    const running = this.toolRefreshes.get(upstream);
    if (running) {
      running.again = true;
      return running.done;
    }
    const entry = { again: false, done: Promise.resolve() };
    this.toolRefreshes.set(upstream, entry);
    entry.done = (async () => {
      try {
        do {
          entry.again = false;
          await this.upstreamToolsChanged(upstream);
        } while (entry.again && !this.closed);
      } finally {
        this.toolRefreshes.delete(upstream);
      }
    })();
    return entry.done;
  }

  /** Re-reads one upstream's tools after it said they changed, and reports and announces what changed. */
  private async upstreamToolsChanged(upstream: Upstream): Promise<void> {
    try {
      // Only this upstream is re-read: the others' lists are what they last answered (rebuildCatalog
      // merges them all).
      if (!(await this.refreshTools((u) => u === upstream))) return;
      this.log.info({ server: upstream.name }, 'upstream tools changed; reporting the new definitions');
      // One report per token: which tools each agent may see is the control plane's answer for its token.
      const tokens = new Set([...this.sessions].map((s) => s.agentToken));
      if (tokens.size === 0 && this.config.agentToken) tokens.add(this.config.agentToken);
      for (const token of tokens) {
        await this.report(token).then(
          (answer) => this.announce(token, answer),
          async (err: Error) => {
            this.log.warn({ err: logText(err) }, 'could not report changed tool definitions');
            // Unknown what they may see now: they list again (and fail closed until the control plane answers).
            for (const s of this.sessions) if (s.agentToken === token && s.toolsShown) await s.server.sendToolListChanged().catch(() => {});
          },
        );
      }
    } catch (err) {
      this.log.warn({ server: upstream.name, err: (err as Error).message }, 'could not handle an upstream list change');
    }
  }

  /**
   * The upstreams' resources, those of servers the session did not declare left out as in viewOf:
   * reading one is UNAUTHORIZED_SERVER, which halts the token. They are not even asked: a server the
   * session did not declare cannot fail or hold up its list. Owners of the URIs listed are learnt (and
   * resourceOwner asks every upstream for a URI it does not know). An upstream whose list fails or is
   * not answered within `listTimeoutMs` contributes nothing (`eachList`). With `readable` (an agent's
   * list: readableServers), only the resources of those servers are returned.
   */
  async resources(scope?: DeclaredScope, readable?: ReadonlySet<string>): Promise<Resource[]> {
    const listed = new Map<string, { servers: Set<string>; resource: Resource; server: string }>();
    // Every declared upstream is asked, also those the token may not read: who else lists a URI decides
    // whether it is contested (below), whatever this token sees.
    for (const { upstream, items } of await this.eachList('resources', this.declaredUpstreams(scope), (u, ms) => u.listResources(ms))) {
      for (const r of items) {
        const seen = listed.get(r.uri);
        if (seen) seen.servers.add(upstream.name);
        else listed.set(r.uri, { servers: new Set([upstream.name]), resource: r, server: upstream.name });
      }
    }
    // A URI two upstreams list has no owner: a read of it went to the one listed last, so one upstream
    // could answer for another's resource. It is hidden, and reading it is UNKNOWN_RESOURCE.
    // Owners learnt before are kept (an upstream that is down now still owns what it listed: reading it
    // answers UPSTREAM_UNAVAILABLE, not another server's answer).
    const out: Resource[] = [];
    for (const [uri, { servers, resource, server }] of listed) {
      // Listed by another server than the one that listed it before (which may be down now): as taken.
      const before = this.resourceOwners.get(uri);
      if (before !== undefined && before !== server) servers.add(before);
      if (servers.size > 1 || this.contestedUris.has(uri)) {
        // Once contested, for as long as the gateway runs: the other lister may only be down for now.
        this.contestedUris.add(uri);
        this.resourceOwners.delete(uri);
        this.warnOnce(`resource:${uri}`, { uri, servers: [...servers] }, `${[...servers].join(' and ')} all list the resource ${uri}; it is hidden and cannot be read through this gateway`);
        continue;
      }
      this.resourceOwners.set(uri, server);
      if (!readable || readable.has(server)) out.push(resource);
    }
    return out;
  }

  async resourceTemplates(scope: DeclaredScope | undefined, readable: ReadonlySet<string>): Promise<ResourceTemplate[]> {
    const lists = await this.eachList('resource templates', this.declaredUpstreams(scope, readable), (u, ms) => u.listResourceTemplates(ms));
    return lists.flatMap((l) => l.items);
  }

  /**
   * Lists `kind` again for a name nobody listed (RELIST_ON_MISS_MS): joins a listing under way, and
   * starts none within RELIST_ON_MISS_MS of the last one's end.
   */
  private relistOnMiss(kind: 'resources' | 'prompts'): Promise<void> {
    const state = this.missLists[kind];
    if (state.pending) return state.pending;
    if (Date.now() - state.endedAt < RELIST_ON_MISS_MS) return Promise.resolve();
    const listing = kind === 'resources' ? this.resources() : this.prompts();
    state.pending = listing.then(
      () => {},
      () => {},
    ).finally(() => {
      state.endedAt = Date.now();
      state.pending = undefined;
    });
    return state.pending;
  }

  /** Which upstream serves a URI: the one that listed it, else the only server offering resources. */
  async resourceOwner(uri: string): Promise<Upstream | undefined> {
    if (!this.resourceOwners.has(uri)) await this.relistOnMiss('resources');
    const owner = this.resourceOwners.get(uri);
    if (owner) return this.ups.get(owner);
    if (this.contestedUris.has(uri)) return undefined;
    const offering = [...this.ups.values()].filter((u) => u.capabilities?.resources !== undefined);
    return offering.length === 1 ? offering[0] : undefined;
  }

  /**
   * The upstreams' prompts, those of servers the session did not declare left out (getting one is
   * UNAUTHORIZED_SERVER, which halts the token). A name two servers share is shown as
   * `<server>__<name>`; a shown name two prompts would both get (an upstream's literal `memory__x` beside
   * memory's namespaced `x`) is hidden for both, as colliding tools are (catalog.ts), so no upstream can
   * answer for another's prompt.
   */
  async prompts(scope?: DeclaredScope, readable?: ReadonlySet<string>): Promise<Prompt[]> {
    const declared = scope?.servers ? new Set(scope.servers) : undefined;
    const all: Array<{ server: string; prompt: Prompt }> = [];
    for (const { upstream, items } of await this.eachList('prompts', [...this.ups.values()], (u, ms) => u.listPrompts(ms))) {
      for (const p of items) all.push({ server: upstream.name, prompt: p });
    }
    const count = new Map<string, number>();
    for (const { prompt } of all) count.set(prompt.name, (count.get(prompt.name) ?? 0) + 1);
    const byExposed = new Map<string, Array<{ server: string; prompt: Prompt }>>();
    for (const entry of all) {
      const exposed = (count.get(entry.prompt.name) ?? 0) > 1 ? `${entry.server}${NAMESPACE_SEPARATOR}${entry.prompt.name}` : entry.prompt.name;
      byExposed.set(exposed, [...(byExposed.get(exposed) ?? []), entry]);
    }
    const index = new Map<string, { server: string; name: string }>();
    const out: Prompt[] = [];
    for (const [exposed, entries] of byExposed) {
      const [only, ...others] = entries;
      if (!only || others.length > 0) {
        const owners = entries.map((e) => `${e.server}/${e.prompt.name}`).join(' and ');
        this.warnOnce(`prompt:${exposed}`, { prompt: exposed }, `${owners} would all be shown as the prompt "${exposed}"; all are hidden`);
        continue;
      }
      index.set(exposed, { server: only.server, name: only.prompt.name });
      if ((!declared || declared.has(only.server)) && (!readable || readable.has(only.server))) out.push({ ...only.prompt, name: exposed });
    }
    this.promptIndex = index;
    return out;
  }

  /** A warning logged once per key for as long as this gateway runs (listing repeats on every request). */
  /**
   * Logs that the gateway could not `what` (`open a session`, `list tools` ...) because of the control
   * plane: at once the first time, then at most every 30 s per `what` and kind of failure, with `repeats`.
   */
  logControlPlaneFailure(what: string, err: unknown, request?: string): void {
    const failure = err instanceof ControlPlaneError ? err.failure : 'unavailable';
    const text = logText(err);
    this.controlPlaneFailures.note(`${what}\u0000${failure}`, (repeat) => this.log.warn({ failure, err: text, ...repeat }, `could not ${what}: the control plane ${failureWords(failure, request)}`));
  }

  private warnOnce(key: string, fields: Record<string, unknown>, message: string): void {
    if (this.warned.has(key)) return;
    this.warned.add(key);
    this.log.warn(fields, message);
  }

  async prompt(exposedName: string): Promise<{ server: string; name: string } | undefined> {
    if (!this.promptIndex.has(exposedName)) await this.relistOnMiss('prompts');
    return this.promptIndex.get(exposedName);
  }

  /** Connects one agent over any MCP transport (stdio, HTTP, or in-memory in tests). */
  async attach(transport: Transport, opts: AgentSessionOptions): Promise<AgentSession> {
    const session = new AgentSession(this, opts);
    this.sessions.add(session);
    const ofToken = this.sessionsByToken.get(session.agentToken) ?? new Set<AgentSession>();
    this.sessionsByToken.set(session.agentToken, ofToken.add(session));
    await session.connect(transport);
    return session;
  }

  /** Serves one agent on this process's stdin/stdout with the config's agent token. */
  async serveStdio(): Promise<AgentSession> {
    const token = this.config.agentToken;
    if (!token) {
      throw new GatewayConfigError([`killswitch.agentToken: stdio needs the agent token; set KILLSWITCH_AGENT_TOKEN or write "agentToken": "\${env:NAME}"`]);
    }
    return this.attach(new StdioServerTransport(), { agentToken: token });
  }

  /** `idleSessionMs`: for tests (30 minutes otherwise, IDLE_SESSION_MS). */
  listenHttp(overrides: { host?: string; port?: number; idleSessionMs?: number } = {}): Promise<HttpFront> {
    return listenHttp(this, { ...this.config.http, ...overrides });
  }

  /**
   * GET /metrics on `killswitch.metrics`' own listener (undefined when the config sets none: then the HTTP
   * front serves it, and a stdio gateway has none). Closed with the gateway.
   */
  async listenMetrics(): Promise<GatewayMetricsListener | undefined> {
    if (!this.config.metrics || this.closed) return undefined;
    this.metricsListener ??= await listenMetrics(this.metrics, this.config.metrics, this.log);
    return this.metricsListener;
  }

  /** A session is gone (client closed). */
  forget(session: AgentSession): void {
    this.sessions.delete(session);
    const ofToken = this.sessionsByToken.get(session.agentToken);
    ofToken?.delete(session);
    if (ofToken?.size === 0) this.sessionsByToken.delete(session.agentToken);
  }

  close(): Promise<void> {
    this.closing ??= this.closeOnce();
    return this.closing;
  }

  private async closeOnce(): Promise<void> {
    this.closed = true;
    clearTimeout(this.refreshTimer);
    for (const s of [...this.sessions]) await s.close();
    await Promise.all([...this.ups.values()].map((u) => u.close()));
    await this.metricsListener?.close();
    this.controlPlane.close();
    this.controlPlaneFailures.flush();
  }
}
