import { Server } from '@modelcontextprotocol/sdk/server/index.js';
import type { Transport } from '@modelcontextprotocol/sdk/shared/transport.js';
import {
  CallToolRequestSchema,
  type CallToolResult,
  ErrorCode,
  GetPromptRequestSchema,
  ListPromptsRequestSchema,
  ListResourcesRequestSchema,
  ListResourceTemplatesRequestSchema,
  ListToolsRequestSchema,
  type LoggingLevel,
  LoggingLevelSchema,
  ReadResourceRequestSchema,
  type ServerCapabilities,
  type ServerNotification,
  SetLevelRequestSchema,
} from '@modelcontextprotocol/sdk/types.js';
import type { DecisionBody } from '../decisions/schemas.js';
import { GATEWAY_CODE, GATEWAY_RPC_ERRORS } from '../errors.js';
import { withoutUnsafeCharacters } from '../tokens/names.js';
import { AgentRequestError, type CallPorts, decideAndRun, type Outcome, type WaitNotice } from './calls.js';
import { type DeclaredScope, logText } from './control-plane.js';
import type { Gateway } from './gateway.js';
import { resultBytes, resultRows } from './guards.js';
import type { DecidedMethod } from './metrics.js';
import { resourceOfUri, resourcesOf, serverResource } from './resources.js';

// One agent connected to the gateway (one stdio client, or one Streamable HTTP session): its agent
// token, its control-plane session, and the MCP server it talks to.

export const GATEWAY_VERSION = '0.1.0';
/** Clients may narrow the declared scope in `initialize`: capabilities.experimental.killswitch. */
export const SCOPE_CAPABILITY = 'killswitch';

const READ_ANNOTATIONS = { readOnlyHint: true } as const;
/** Closing the control-plane session on the way out waits at most this long (the gateway's timeout if shorter). */
const SESSION_CLOSE_TIMEOUT_MS = 2_000;

export interface AgentSessionOptions {
  agentToken: string;
  /** User agent of the HTTP client, for the audit trail. */
  userAgent?: string | undefined;
}

/** The session scope: the gateway's config, narrowed (never widened) by what the client declares. */
export function declaredScope(config: { readOnly: boolean; servers: string[] | undefined; purpose: string }, allServers: readonly string[], fromClient: unknown): DeclaredScope {
  const c = (fromClient !== null && typeof fromClient === 'object' ? fromClient : {}) as { read_only?: unknown; readOnly?: unknown; servers?: unknown; purpose?: unknown };
  const configured = config.servers ?? [...allServers];
  const asked = Array.isArray(c.servers) ? c.servers.filter((s): s is string => typeof s === 'string') : undefined;
  const scope: DeclaredScope = {
    read_only: config.readOnly || c.read_only === true || c.readOnly === true,
    servers: asked ? configured.filter((s) => asked.includes(s)) : configured,
  };
  // The control plane refuses line breaks, control and bidirectional characters in a purpose (operators
  // read it): a client's are made spaces here rather than failing every call of the session.
  const fromAgent = typeof c.purpose === 'string' ? withoutUnsafeCharacters(c.purpose).trim() : '';
  const purpose = cutWhole(fromAgent || config.purpose, 1000);
  if (purpose) scope.purpose = purpose;
  return scope;
}

/**
 * `text` cut to the decision schema's `max` (its maxLength counts characters, never more than UTF-16 units),
 * never between the halves of a surrogate pair: a lone half reached the audit row as U+FFFD (a client
 * named 199 letters and an emoji was audited with a replacement character for the emoji).
 */
export function cutWhole(text: string, max: number): string {
  if (text.length <= max) return text;
  const last = text.charCodeAt(max - 1);
  return text.slice(0, last >= 0xd800 && last <= 0xdbff ? max - 1 : max);
}

export class AgentSession implements CallPorts {
  readonly agentToken: string;
  readonly server: Server;
  private readonly userAgent: string | undefined;
  private opening: Promise<string> | undefined;
  private clientScope: unknown;
  /** The client the first initialize named (see install). */
  private clientInfo: ReturnType<Server['getClientVersion']>;
  private closed = false;
  /** The least severe log message this agent wants (logging/setLevel); every level until it says. */
  private logLevel: LoggingLevel | undefined;
  /**
   * What this agent was last shown by tools/list (or told by list_changed), undefined before its first
   * tools/list; `waiting`: the list may grow without an upstream saying so (Gateway.refreshSoon).
   */
  toolsShown: { fingerprint: string; waiting: boolean } | undefined;

  constructor(
    private readonly gateway: Gateway,
    opts: AgentSessionOptions,
  ) {
    this.agentToken = opts.agentToken;
    this.userAgent = opts.userAgent;
    this.server = new Server({ name: 'killswitch-gateway', version: GATEWAY_VERSION }, { capabilities: this.capabilities() });
    // Whatever the transport (stdio, HTTP, in-memory), its end is the agent's end.
    this.server.onclose = () => void this.close();
    this.install();
  }

  get environment(): DecisionBody['environment'] | undefined {
    return this.gateway.config.environment;
  }

  get scope(): DeclaredScope {
    return declaredScope(this.gateway.config.session, this.gateway.serverNames, this.clientScope);
  }

  /** Sets what the client declared in `initialize` (before the session opens). */
  declareFromClient(experimentalCapability: unknown): void {
    this.clientScope = experimentalCapability;
  }

  /** Opens the control-plane session with the declared scope; one at a time, retried after a failure. */
  sessionId(): Promise<string> {
    if (!this.opening) {
      const opening = this.gateway.controlPlane.openSession(this.agentToken, this.scope).then((s) => {
        // Said once per session: the operator reading the gateway's log learns why those calls will fail.
        for (const w of Array.isArray(s.warnings) ? s.warnings : []) this.gateway.log.warn({ session_id: s.session_id, field: w.field }, `control-plane session warning: ${w.problem}`);
        return s.session_id;
      });
      this.opening = opening;
      opening.catch((err: unknown) => {
        if (this.opening === opening) this.opening = undefined;
        this.logFailure('open a session', err);
      });
    }
    return this.opening;
  }

  reopen(): Promise<string> {
    this.opening = undefined;
    return this.sessionId();
  }

  decide(body: DecisionBody) {
    return this.gateway.controlPlane.decide(this.agentToken, body).catch((err: unknown) => {
      this.logFailure('ask for a decision', err);
      throw err;
    });
  }

  reportResult(decisionId: string, body: Parameters<CallPorts['reportResult']>[1]) {
    return this.gateway.controlPlane.reportResult(this.agentToken, decisionId, body).catch((err: unknown) => {
      this.logFailure('report a result', err);
      throw err;
    });
  }

  /**
   * The agent reads that its call was denied DEPENDENCY_UNAVAILABLE (or refused) and no more; the
   * gateway's log says where the control plane is and what the socket said.
   */
  private logFailure(what: string, err: unknown): void {
    this.gateway.logControlPlaneFailure(what, err);
  }

  get approvalWait() {
    return this.gateway.config.approvals;
  }

  approvalStatus(approvalId: string) {
    return this.gateway.controlPlane.approvalStatus(this.agentToken, approvalId);
  }

  client(): DecisionBody['client'] | undefined {
    const info = this.clientInfo ?? this.server.getClientVersion();
    if (!info && !this.userAgent) return undefined;
    const out: NonNullable<DecisionBody['client']> = {};
    // The control plane refuses control characters and bidirectional marks here (400 for every call):
    // a client's are made spaces, as its purpose's are.
    if (info?.name) out.name = cutWhole(withoutUnsafeCharacters(info.name), 200);
    if (info?.version) out.version = cutWhole(withoutUnsafeCharacters(info.version), 100);
    const ua = this.userAgent ?? (info ? `${info.name}/${info.version}` : undefined);
    if (ua) out.user_agent = cutWhole(withoutUnsafeCharacters(ua), 1000);
    return out;
  }

  async connect(transport: Transport): Promise<void> {
    await this.server.connect(transport);
  }

  /**
   * The agent went away (stdin ended, HTTP session deleted or idle, gateway stopping): closes the MCP
   * server and, best-effort, the control-plane session, so it no longer counts against the token's open
   * sessions (otherwise each restart left one open until it idled out). A halted session stays halted:
   * the control plane refuses to close it, and the session then idles out as before.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.gateway.forget(this);
    await this.server.close().catch(() => {});
    const opening = this.opening;
    if (!opening) return;
    const sessionId = await opening.catch(() => undefined);
    if (!sessionId) return;
    const cp = this.gateway.controlPlane;
    await cp.closeSession(this.agentToken, sessionId, Math.min(cp.timeoutMs, SESSION_CLOSE_TIMEOUT_MS)).then(
      (a) => this.gateway.log.info({ session_id: sessionId, already_closed: a.already_closed }, 'control-plane session closed'),
      (err: Error) => this.gateway.log.warn({ session_id: sessionId, err: logText(err) }, 'could not close the control-plane session; it idles out'),
    );
  }

  /** Whether a log message of `level` is at or above what the agent asked for (logging/setLevel). */
  wantsLog(level: LoggingLevel): boolean {
    if (!this.logLevel) return true;
    return LOG_LEVELS.indexOf(level) >= LOG_LEVELS.indexOf(this.logLevel);
  }

  private capabilities(): ServerCapabilities {
    // logging: where an agent without a progress token reads that its call waits for a human.
    const caps: ServerCapabilities = { tools: { listChanged: true }, logging: {} };
    if (this.gateway.hasCapability('resources')) caps.resources = {};
    if (this.gateway.hasCapability('prompts')) caps.prompts = { listChanged: true };
    return caps;
  }

  private install(): void {
    const s = this.server;
    // stdio: the session opens right after initialize; a failure is retried by the first call.
    s.oninitialized = () => {
      // The client named at the first initialize is the session's: a second initialize (the SDK answers
      // it) does not rename the client in later audit rows.
      this.clientInfo ??= s.getClientVersion();
      this.declareFromClient(s.getClientCapabilities()?.experimental?.[SCOPE_CAPABILITY]);
      // A failure is logged by sessionId(); calls deny until a session opens.
      this.sessionId().catch(() => {});
    };

    // Replaces the SDK's own: the gateway's log messages go out through a request's sendNotification
    // (on Streamable HTTP, the request's stream), which the SDK's level filter does not see.
    s.setRequestHandler(SetLevelRequestSchema, async (req) => {
      this.logLevel = req.params.level;
      return {};
    });

    s.setRequestHandler(ListToolsRequestSchema, async (req) => {
      refuseCursor('tools/list', req.params?.cursor);
      return { tools: await this.gateway.listTools(this) };
    });

    s.setRequestHandler(CallToolRequestSchema, async (req, extra): Promise<CallToolResult> => {
      const tool = this.gateway.tool(req.params.name);
      if (!tool) throw this.unknownName('tools/call', GATEWAY_CODE.UNKNOWN_TOOL, `no tool named "${req.params.name}" behind this gateway; list the tools again (tools/list)`);
      const upstream = this.gateway.upstream(tool.server);
      const args = req.params.arguments ?? {};
      const call = {
        server: tool.server,
        tool: tool.name,
        arguments: args,
        resources: resourcesOf(tool.server, args, upstream.config.allowedDirectories, upstream.cwd),
        toolHash: tool.definition.hash,
        ...(tool.definition.annotations ? { annotations: tool.definition.annotations } : {}),
      };
      const outcome = await decideAndRun(
        this,
        call,
        upstream.config.limits,
        extra.signal,
        (o) => upstream.callTool(tool.name, args, o),
        (r) => ({ bytes: resultBytes(r), rows: resultRows(r, upstream.config.limits.maxResultBytes), isError: r.isError === true }),
        waitNotice(extra, (level) => this.wantsLog(level)),
      );
      this.gateway.metrics.observeCall('tools/call', tool.server, outcome);
      return toolResultOf(outcome);
    });

    if (this.gateway.hasCapability('resources')) this.installResources();
    if (this.gateway.hasCapability('prompts')) this.installPrompts();
    // Everything else (resources/subscribe, completion/complete, tasks/*, a method of a later MCP version)
    // is refused at once, naming the method: the SDK's bare "Method not found" left an agent's user
    // guessing whether the gateway or an upstream lacked it. Nothing of it reaches an upstream.
    s.fallbackRequestHandler = async (req) => {
      throw new AgentRequestError(ErrorCode.MethodNotFound, unsupportedMethodText(req.method));
    };
  }

  private installResources(): void {
    const s = this.server;
    // Only servers whose resources this token may read are listed (Gateway.readableServers).
    s.setRequestHandler(ListResourcesRequestSchema, async (req) => {
      refuseCursor('resources/list', req.params?.cursor);
      return { resources: await this.gateway.resources(this.scope, await this.gateway.readableServers(this, 'resources')) };
    });
    s.setRequestHandler(ListResourceTemplatesRequestSchema, async (req) => {
      refuseCursor('resources/templates/list', req.params?.cursor);
      return { resourceTemplates: await this.gateway.resourceTemplates(this.scope, await this.gateway.readableServers(this, 'resources', 'resource templates')) };
    });
    s.setRequestHandler(ReadResourceRequestSchema, async (req, extra) => {
      const upstream = await this.gateway.resourceOwner(req.params.uri);
      if (!upstream) throw this.unknownName('resources/read', GATEWAY_CODE.UNKNOWN_RESOURCE, `no upstream server offers ${req.params.uri}`);
      const call = {
        server: upstream.name,
        tool: 'resources/read',
        arguments: { uri: req.params.uri },
        resources: resourceOfUri(upstream.name, req.params.uri, upstream.config.allowedDirectories, upstream.cwd),
        annotations: READ_ANNOTATIONS,
      };
      const outcome = await decideAndRun(
        this,
        call,
        upstream.config.limits,
        extra.signal,
        (o) => upstream.readResource(req.params.uri, o),
        (r) => ({ bytes: resultBytes(r), rows: resultRows(r, upstream.config.limits.maxResultBytes), isError: false }),
        // A read the policy sends to a human waits as a tool call does, and says so the same way.
        waitNotice(extra, (level) => this.wantsLog(level)),
      );
      this.gateway.metrics.observeCall('resources/read', upstream.name, outcome);
      return unwrap(outcome);
    });
  }

  /** unknownName, counted (killswitch_gateway_unknown_names_total): nothing else records it. */
  private unknownName(method: DecidedMethod, code: 'UNKNOWN_TOOL' | 'UNKNOWN_RESOURCE' | 'UNKNOWN_PROMPT', message: string): AgentRequestError {
    this.gateway.metrics.observeUnknown(method);
    return unknownName(code, message);
  }

  private installPrompts(): void {
    const s = this.server;
    s.setRequestHandler(ListPromptsRequestSchema, async (req) => {
      refuseCursor('prompts/list', req.params?.cursor);
      return { prompts: await this.gateway.prompts(this.scope, await this.gateway.readableServers(this, 'prompts')) };
    });
    s.setRequestHandler(GetPromptRequestSchema, async (req, extra) => {
      const prompt = await this.gateway.prompt(req.params.name);
      if (!prompt) throw this.unknownName('prompts/get', GATEWAY_CODE.UNKNOWN_PROMPT, `no prompt named "${req.params.name}" behind this gateway`);
      const upstream = this.gateway.upstream(prompt.server);
      const call = {
        server: prompt.server,
        tool: 'prompts/get',
        arguments: { name: prompt.name, ...(req.params.arguments ? { arguments: req.params.arguments } : {}) },
        resources: [serverResource(prompt.server)],
        annotations: READ_ANNOTATIONS,
      };
      const outcome = await decideAndRun(
        this,
        call,
        upstream.config.limits,
        extra.signal,
        (o) => upstream.getPrompt(prompt.name, req.params.arguments, o),
        (r) => ({ bytes: resultBytes(r), rows: undefined, isError: false }),
        waitNotice(extra, (level) => this.wantsLog(level)),
      );
      this.gateway.metrics.observeCall('prompts/get', prompt.server, outcome);
      return unwrap(outcome);
    });
  }
}

/**
 * A tool, resource or prompt no upstream behind the gateway offers: a protocol error, -32602, as MCP asks
 * ("Protocol Errors ... Unknown tools", example code -32602; "Invalid prompt name: -32602"; SEP-2164 for
 * resources). Nothing was decided or run, so there is no tool result to give: a result with isError is
 * what MCP keeps for a tool that ran (or was refused) and failed.
 */
function unknownName(code: 'UNKNOWN_TOOL' | 'UNKNOWN_RESOURCE' | 'UNKNOWN_PROMPT', message: string): AgentRequestError {
  return new AgentRequestError(GATEWAY_RPC_ERRORS.INVALID_PARAMS.code, `${code}: ${message}`, { code });
}

/**
 * The gateway answers every list in one page and never gives a cursor, so any cursor is one it did not
 * issue: -32602, as MCP asks for an invalid cursor (answering the whole list again would hand a client
 * that pages the same items twice).
 */
function refuseCursor(method: string, cursor: string | undefined): void {
  if (cursor !== undefined) throw new AgentRequestError(ErrorCode.InvalidParams, `Invalid params: the killswitch gateway answers ${method} in one page and gave no cursor; list again without one`);
}

/** The refusal of a method the gateway does not serve (see install). */
export function unsupportedMethodText(method: string): string {
  return `Method not found: the killswitch gateway does not support ${JSON.stringify(method.slice(0, 200))} (docs/gateway.md, "MCP features: what passes, what is refused"); nothing was sent to an upstream server`;
}

type HandlerExtra = { _meta?: { progressToken?: string | number | undefined } | undefined; sendNotification: (n: ServerNotification) => Promise<void> };

/**
 * How a call waiting for a human tells the agent: progress notifications when the request carries a
 * progress token (clients may reset their request timeout on them), else a log message.
 */
function waitNotice(extra: HandlerExtra, wantsLog: (level: LoggingLevel) => boolean): WaitNotice {
  const token = extra._meta?.progressToken;
  let n = 0;
  return async (message) => {
    n += 1;
    if (token !== undefined) await extra.sendNotification({ method: 'notifications/progress', params: { progressToken: token, progress: n, message } });
    else if (wantsLog('info')) await extra.sendNotification({ method: 'notifications/message', params: { level: 'info', logger: 'killswitch', data: message } });
  };
}

/** MCP's log levels, least severe first (RFC 5424 order, as the spec lists them). */
const LOG_LEVELS: readonly LoggingLevel[] = LoggingLevelSchema.options;

/** Denials and withheld results are tool results with isError (the agent reads them; the SDK client
 * rejects a success without structuredContent from tools that declare an outputSchema). */
export function toolResultOf(outcome: Outcome<CallToolResult>): CallToolResult {
  if (outcome.kind !== 'ok') return { isError: true, content: [{ type: 'text', text: outcome.text }], _meta: { 'killswitch/decision': decisionOf(outcome) } };
  const result = withoutOurMeta(outcome.result);
  if (!outcome.warning) return result;
  // The 80% warning goes where the agent reads: appended to the result text, and in _meta (as for
  // resources/read and prompts/get) for a client that reads only structuredContent and _meta.
  const content = [...(result.content ?? []), { type: 'text' as const, text: `[killswitch warning] ${outcome.warning}` }];
  return { ...result, content, _meta: { ...(result._meta ?? {}), 'killswitch/warning': outcome.warning } };
}

/**
 * An upstream's result without `_meta` keys of the gateway's own namespace (`killswitch/...`): only the
 * gateway writes `killswitch/decision` and `killswitch/warning`, so an agent can trust what it reads
 * there (an upstream answered an allowed call with a forged SESSION_HALTED decision in its `_meta`).
 */
export function withoutOurMeta<T extends { _meta?: Record<string, unknown> | undefined }>(result: T): T {
  const meta = result._meta;
  if (!meta || !Object.keys(meta).some((k) => k.startsWith(META_NAMESPACE))) return result;
  const kept = Object.fromEntries(Object.entries(meta).filter(([k]) => !k.startsWith(META_NAMESPACE)));
  return { ...result, _meta: kept };
}

const META_NAMESPACE = 'killswitch/';

/**
 * What the gateway says of a call that did not give its result: in a tool result's
 * `_meta["killswitch/decision"]`, and as `error.data` of a refused resources/read or prompts/get.
 */
function decisionOf(outcome: Exclude<Outcome<unknown>, { kind: 'ok' }>): Record<string, unknown> {
  return {
    outcome: outcome.kind,
    code: outcome.kind === 'withheld' ? outcome.trigger : outcome.code,
    ...(outcome.decisionId ? { decision_id: outcome.decisionId } : {}),
    ...(outcome.kind === 'denied' && outcome.approvalId ? { approval_id: outcome.approvalId } : {}),
    ...(outcome.kind === 'denied' && outcome.retryAfterS !== undefined ? { retry_after_s: outcome.retryAfterS } : {}),
  };
}

/**
 * resources/read and prompts/get have no error result: a refusal is a JSON-RPC error whose message starts
 * with the code. Denied or withheld is the kill switch's own refusal (GATEWAY_RPC_ERRORS.REFUSED); a call
 * that was allowed and failed is MCP's internal error (-32603). Never -32600, "Invalid Request": the
 * agent's request was well-formed, and a client may take that code for a bug of its own.
 */
function unwrap<T extends object>(outcome: Outcome<T>): T {
  if (outcome.kind === 'ok') {
    const result = withoutOurMeta(outcome.result as T & { _meta?: Record<string, unknown> });
    if (!outcome.warning) return result;
    return { ...result, _meta: { ...(result._meta ?? {}), 'killswitch/warning': outcome.warning } };
  }
  const rpcCode = outcome.kind === 'failed' ? GATEWAY_RPC_ERRORS.INTERNAL_ERROR.code : GATEWAY_RPC_ERRORS.REFUSED.code;
  throw new AgentRequestError(rpcCode, outcome.text, decisionOf(outcome));
}
