import type { Readable } from 'node:stream';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import type { RequestOptions } from '@modelcontextprotocol/sdk/shared/protocol.js';
import type { Transport } from '@modelcontextprotocol/sdk/shared/transport.js';
import {
  type CallToolResult,
  CallToolResultSchema,
  ErrorCode,
  type GetPromptResult,
  isJSONRPCErrorResponse,
  isJSONRPCResultResponse,
  McpError,
  type Prompt,
  PromptListChangedNotificationSchema,
  type ReadResourceResult,
  type Resource,
  type ResourceTemplate,
  type ServerCapabilities,
  ToolListChangedNotificationSchema,
} from '@modelcontextprotocol/sdk/types.js';
import type { Logger } from 'pino';
import { isSecretKey, knownSecrets, redactText, redactTextKnowing } from '../audit/redact.js';
import { definitionOf, type ReportedTool } from './catalog.js';
import type { UpstreamConfig } from './config.js';
import { fetchWithin, installMessageBuffer, messageLimitBytes, OversizeAnswers, StdioMessageBuffer, type UpstreamFetch } from './message-size.js';
import { readStderrLines } from './stderr-lines.js';

// One upstream MCP server as the gateway runs it: a child process over stdio or a Streamable HTTP URL.
// The gateway's client declares no capabilities at all: no `roots` (server-filesystem would replace
// its configured directories with the agent's roots), no sampling, no elicitation.
//
// One upstream serves every agent of the gateway, so one agent must not be able to take it away from
// the others: a message over the size limit is discarded (message-size.ts), and a connection that
// closes unexpectedly (the process crashed, was killed) is reopened with backoff, for as long as the
// gateway runs: the operator expects it to heal once the server behind it (a database, say) is back,
// not a restart. While it is down, calls fail at once with UpstreamUnavailableError; they never wait.
// An outage ends only once the connection has stayed up for a while (stableAfterMs): an upstream that
// initializes and then dies again (its database is down, say) keeps backing off instead of being
// restarted every half second, and its log stays as quiet as that of one that does not start at all.

/** The most pages of one list read from an upstream; the rest are left out (and warned once per method). */
export const MAX_PAGES = 50;
/** An upstream inventing method names cannot fill the log: the first this many are warned, once each. */
const MAX_REFUSED_METHODS_WARNED = 20;
/** The most of an upstream's error message a list failure quotes (the gateway's log, a call's text). */
const MAX_LIST_ERROR_CHARS = 300;

/** How an upstream whose connection closed unexpectedly is reopened. */
export interface ReconnectBackoff {
  /** The wait before the first attempt, doubled for each next one up to maxDelayMs. */
  firstDelayMs: number;
  /** The longest wait: once reached, one attempt every maxDelayMs until it is back or closed. */
  maxDelayMs: number;
  /** The first attempts, each logged when it fails; after them the log says "still down" less often. */
  loudAttempts: number;
  /** While it stays down after the loud attempts: at most one log line this often. */
  quietLogEveryMs: number;
  /**
   * How long a reopened connection must stay up to end the outage. One that closes sooner counts as a
   * failed attempt of the same outage: its attempts, backoff, log throttling and downtime go on.
   */
  stableAfterMs: number;
}

/**
 * 0.5 s, 1 s, 2 s ... 30 s: ten warnings in the first ~2.5 min, then one line per 5 min while down; a
 * connection that closes again within 60 s of reconnecting is the same outage.
 */
export const RECONNECT_BACKOFF: Readonly<ReconnectBackoff> = { firstDelayMs: 500, maxDelayMs: 30_000, loudAttempts: 10, quietLogEveryMs: 5 * 60_000, stableAfterMs: 60_000 };

/** One outage of an upstream: from its connection closing until a reopened one stayed up stableAfterMs. */
interface Outage {
  readonly since: number;
  /** Attempts so far, across reconnect loops: a connection that closed again soon counts as one. */
  attempts: number;
  /** When its last warning was logged (the quiet rule counts from it). */
  lastLogAt: number;
  /** Reopened connections that closed again before they were stable. */
  closedAgain: number;
}

/** A downtime in whole seconds. */
const seconds = (ms: number) => Math.round(ms / 1000);
/** An interval as written in a message: 30 s, 300 s (0.1 s with a test's backoff). */
const every = (ms: number) => `${ms / 1000} s`;

/** An upstream list (tools/list, resources/list ...) that failed or was not answered in time; the message names the upstream. */
export class UpstreamListError extends Error {
  constructor(
    readonly server: string,
    readonly method: string,
    message: string,
    /** The JSON-RPC error code the upstream answered, if it answered one. */
    readonly upstreamCode?: number,
  ) {
    super(message);
    this.name = 'UpstreamListError';
  }
}

/** The upstream cannot take calls now (its connection closed and the gateway is reconnecting it, or it is closed). */
export class UpstreamUnavailableError extends Error {
  constructor(
    readonly server: string,
    message: string,
  ) {
    super(message);
    this.name = 'UpstreamUnavailableError';
  }
}

export class Upstream {
  readonly name: string;
  private client: Client | undefined;
  private toolDefs: ReportedTool[] = [];
  /** Why its tools are left out: the last re-read of them failed on a live connection (see refreshTools). */
  private unlisted: string | undefined;
  private serverCapabilities: ServerCapabilities | undefined;
  private closed = false;
  /** The one reconnect loop of this upstream, while it runs. */
  private reconnecting: Promise<void> | undefined;
  /** Ends the reconnect loop's current wait early (close()). */
  private wake: (() => void) | undefined;
  /** The client of a connection being opened: close() closes it, so no start outlives the gateway. */
  private opening: Client | undefined;
  /** From the connection closing until a reopened one has stayed up stableAfterMs (or the upstream is closed). */
  private outage: Outage | undefined;
  /** Ends the outage once the reopened connection has stayed up stableAfterMs. */
  private stableTimer: NodeJS.Timeout | undefined;
  private startTimeoutMs = 30_000;
  /** Read before every wait, so a test can shorten it on a running gateway (`gateway.upstream(name)`). */
  reconnectBackoff: Readonly<ReconnectBackoff> = RECONNECT_BACKOFF;
  private readonly oversize = new OversizeAnswers();
  /** The client-side methods this upstream asked for and was refused, each warned once (open). */
  private readonly refusedMethods = new Set<string>();
  /** The lists this upstream answered in more than MAX_PAGES pages, each warned once (open). */
  private readonly cutLists = new Set<string>();
  /** Called when the upstream says its tools (or prompts) changed, and after it reconnected. */
  onListChanged: ((kind: 'tools' | 'prompts') => void) | undefined;

  /**
   * What we hand the upstream that may be secret, masked in its stderr lines (a server may print its
   * connection string or settings): values of env variables with secret names, headers, and args read from
   * ${env:...} or ${file:...} (those the control plane is told as the reference, not the value).
   */
  private readonly handedSecrets: string[];

  constructor(
    readonly config: UpstreamConfig,
    private readonly log: Logger,
  ) {
    this.name = config.name;
    const reported = config.identity.args ?? [];
    this.handedSecrets = knownSecrets([
      ...Object.entries(config.env)
        .filter(([k]) => isSecretKey(k))
        .map(([, v]) => v),
      ...Object.values(config.headers),
      ...config.args.flatMap((a, i) => (reported[i] === a ? [] : [a, substituted(reported[i] ?? '', a)])),
    ]);
  }

  get tools(): readonly ReportedTool[] {
    return this.toolDefs;
  }

  /**
   * Why this upstream's tools are left out of tools/list and the tool report, and its calls answer
   * UPSTREAM_UNAVAILABLE without reaching it: its last tools/list on a live connection failed or was
   * not answered in time. Undefined once one succeeds (or while it never failed). A closed connection
   * does not set it: a down upstream keeps its last list (its calls fail as down ones do).
   */
  get toolsUnlisted(): string | undefined {
    return this.unlisted;
  }

  /** Whether its connection is open now: false while it is down and being reconnected, and once closed. */
  get up(): boolean {
    return this.client !== undefined;
  }

  /** The capabilities of the last connection (kept while it is down: the agents' view does not flicker). */
  get capabilities(): ServerCapabilities | undefined {
    return this.serverCapabilities;
  }

  get cwd(): string {
    return this.config.cwd ?? process.cwd();
  }

  /** The largest message read from this upstream (see message-size.ts). */
  get messageLimitBytes(): number {
    return messageLimitBytes(this.config.limits);
  }

  async connect(timeoutMs: number): Promise<void> {
    this.startTimeoutMs = timeoutMs;
    await this.open(timeoutMs);
    await this.readTools(this.connected, timeoutMs);
  }

  /** One connection: a new client and transport, live only once initialize succeeded. */
  private async open(timeoutMs: number): Promise<void> {
    const client = new Client({ name: 'killswitch-gateway', version: '0.1.0' }, { capabilities: {} });
    client.setNotificationHandler(ToolListChangedNotificationSchema, () => this.onListChanged?.('tools'));
    client.setNotificationHandler(PromptListChangedNotificationSchema, () => this.onListChanged?.('prompts'));
    // A request of the upstream to the client side (sampling/createMessage, elicitation/create, roots/list,
    // tasks/...) never reaches an agent: it would let a server use the agent's model, ask its user or
    // learn its directories outside any decision. Refused at once, naming the method (the SDK's bare
    // "Method not found" reads like a bug of the server), and the operator is told once per method.
    client.fallbackRequestHandler = async (req) => {
      const method = req.method.slice(0, 200);
      if (!this.refusedMethods.has(method) && this.refusedMethods.size < MAX_REFUSED_METHODS_WARNED) {
        this.refusedMethods.add(method);
        this.log.warn({ server: this.name, method }, `upstream asked the gateway for ${JSON.stringify(method)}: refused (the gateway passes no request of an upstream server on to agents: no sampling, elicitation or roots)`);
      }
      throw Object.assign(new Error(`Method not found: the killswitch gateway does not pass ${JSON.stringify(method)} on to its agents (no sampling, elicitation or roots for upstream servers)`), { code: ErrorCode.MethodNotFound });
    };
    // Only the live connection's errors are warnings: a connection being opened reports its failure to
    // the reconnect loop (a spawn ENOENT or EACCES, each attempt), which logs it by the quiet rule, and a
    // closed one (a write to the exited process) is reported by its close. Past an outage's loud
    // attempts, a connection that is up again but not yet stable logs them at debug too.
    client.onerror = (err) => {
      const live = this.client === client && (this.outage === undefined || this.outage.attempts < this.reconnectBackoff.loudAttempts);
      const text = protocolErrorText(err.message);
      if (live) this.log.warn({ server: this.name, err: text }, 'upstream protocol error');
      else this.log.debug({ server: this.name, err: text }, 'upstream protocol error (the connection is not live; its outage is logged)');
    };
    const limit = this.messageLimitBytes;
    let transport: Transport;
    let httpFetch: UpstreamFetch | undefined;
    if (this.config.transport === 'http') {
      httpFetch = fetchWithin(limit, this.oversize);
      transport = new StreamableHTTPClientTransport(new URL(this.config.url as string), { requestInit: { headers: this.config.headers }, fetch: httpFetch });
    } else {
      const stdio = new StdioClientTransport({
        command: this.config.command as string,
        args: this.config.args,
        env: this.config.env,
        stderr: 'pipe',
        maxBufferSize: limit,
        ...(this.config.cwd !== undefined ? { cwd: this.config.cwd } : {}),
      });
      if (!installMessageBuffer(stdio, new StdioMessageBuffer(limit, this.oversize))) {
        this.log.warn({ server: this.name }, "this SDK's stdio transport has no replaceable read buffer; a message over the limit closes the connection");
      }
      const stderr = stdio.stderr;
      if (stderr) {
        readStderrLines(
          stderr as unknown as Readable,
          () => this.log.isLevelEnabled('debug'),
          (line) => this.log.debug({ server: this.name }, `upstream: ${redactTextKnowing(line, this.handedSecrets)}`),
        );
      }
      transport = stdio;
    }
    let upAt = 0;
    transport.onclose = () => {
      if (this.client !== client) return;
      this.client = undefined;
      clearTimeout(this.stableTimer);
      if (this.closed) return;
      const outage = this.outage;
      if (outage) {
        // Reopened, but not for long: the same outage, its attempt failed.
        outage.closedAgain++;
        const upFor = seconds(Date.now() - upAt);
        this.logFailure(outage, outage.attempts, `its connection closed again ${upFor} s after it reconnected (it must stay up ${every(this.reconnectBackoff.stableAfterMs)} to count as back)`);
      } else {
        this.outage = { since: Date.now(), attempts: 0, lastLogAt: Date.now(), closedAgain: 0 };
        this.log.warn({ server: this.name }, 'upstream connection closed; its calls fail with UPSTREAM_UNAVAILABLE while the gateway reconnects it');
      }
      this.scheduleReconnect();
    };
    this.opening = client;
    try {
      await client.connect(transport, { timeout: timeoutMs });
    } catch (err) {
      await client.close().catch(() => {});
      throw err;
    } finally {
      if (this.opening === client) this.opening = undefined;
    }
    if (this.closed) {
      await client.close().catch(() => {});
      throw new UpstreamUnavailableError(this.name, `upstream ${this.name} is closed`);
    }
    if (httpFetch) {
      // An answered request's POST is done: an SSE stream the upstream keeps open after the answer is
      // closed (message-size.ts). Set after connect, which puts the client's own handler in place.
      const deliver = transport.onmessage;
      const fetchOf = httpFetch;
      transport.onmessage = (message, extra) => {
        deliver?.(message, extra);
        if ((isJSONRPCResultResponse(message) || isJSONRPCErrorResponse(message)) && message.id !== undefined) fetchOf.answered(message.id);
      };
    }
    this.serverCapabilities = client.getServerCapabilities();
    this.client = client;
    upAt = Date.now();
    const outage = this.outage;
    if (outage) {
      this.stableTimer = setTimeout(() => this.stable(client, outage, upAt), this.reconnectBackoff.stableAfterMs);
      this.stableTimer.unref();
    }
  }

  /** The reopened connection stayed up stableAfterMs: the outage is over, the next close starts a new one. */
  private stable(client: Client, outage: Outage, upAt: number): void {
    if (this.client !== client || this.outage !== outage) return;
    this.outage = undefined;
    if (outage.closedAgain === 0) return; // its "upstream reconnected" line said it all
    this.log.info(
      { server: this.name, attempts: outage.attempts, closedAgain: outage.closedAgain, downForSeconds: seconds(upAt - outage.since) },
      `upstream back for good: up for ${every(this.reconnectBackoff.stableAfterMs)} after an outage in which it reconnected but closed again ${outage.closedAgain} times`,
    );
  }

  /**
   * Starts the reconnect loop unless one runs (there is never more than one per upstream). A connection
   * that closes again while the loop is finishing (its onclose found the loop still set) starts a new one,
   * which goes on with the outage's attempts.
   */
  private scheduleReconnect(): void {
    if (this.reconnecting || this.closed) return;
    this.reconnecting = this.reconnect()
      .catch((err: Error) => this.log.error({ server: this.name, err: err.message }, 'upstream reconnect loop failed'))
      .finally(() => {
        this.reconnecting = undefined;
        if (!this.client && !this.closed) this.scheduleReconnect();
      });
  }

  /**
   * Reopens the connection until it is back or the upstream is closed: the backoff's first attempts
   * come quickly and each failure is logged; then one attempt every maxDelayMs, forever, logged at most
   * once per quietLogEveryMs so a server that is down all night does not flood the log. The attempts go
   * on from the outage's last one: a connection that closed again before it was stable (onclose) was
   * one of them, so an upstream that initializes and dies at once backs off like one that never starts.
   */
  private async reconnect(): Promise<void> {
    this.outage ??= { since: Date.now(), attempts: 0, lastLogAt: Date.now(), closedAgain: 0 };
    const outage = this.outage;
    for (;;) {
      const attempt = ++outage.attempts;
      const b = this.reconnectBackoff;
      await this.sleep(Math.min(b.firstDelayMs * 2 ** Math.min(attempt - 1, 30), b.maxDelayMs));
      if (this.closed) return;
      try {
        await this.open(this.startTimeoutMs);
      } catch (err) {
        if (this.closed) return;
        this.logFailure(outage, attempt, (err as Error).message);
        continue;
      }
      // Every reconnect of a steady outage is logged; one that flaps says so on its loud attempts, and
      // later only once it stayed up (stable()): the quiet "still down" lines count its closes.
      if (outage.closedAgain === 0 || attempt <= b.loudAttempts) {
        this.log.info(
          { server: this.name, attempts: attempt, downForSeconds: seconds(Date.now() - outage.since), ...(outage.closedAgain ? { closedAgain: outage.closedAgain } : {}) },
          'upstream reconnected',
        );
      }
      this.onListChanged?.('tools');
      return;
    }
  }

  /**
   * A failed attempt, logged by the quiet rule: a warning for each of the first loudAttempts, then at
   * most one "still down" line per quietLogEveryMs.
   */
  private logFailure(outage: Outage, attempt: number, why: string): void {
    const b = this.reconnectBackoff;
    const downFor = seconds(Date.now() - outage.since);
    const flapped = outage.closedAgain ? { closedAgain: outage.closedAgain } : {};
    if (attempt < b.loudAttempts) {
      this.log.warn({ server: this.name, attempt, err: why, ...flapped }, 'upstream reconnect failed');
    } else if (attempt === b.loudAttempts) {
      this.log.warn(
        { server: this.name, attempt, downForSeconds: downFor, err: why, ...flapped },
        `upstream reconnect failed; it stays down: the gateway tries again every ${every(b.maxDelayMs)} for as long as it runs, and says so at most every ${every(b.quietLogEveryMs)}`,
      );
    } else if (Date.now() - outage.lastLogAt >= b.quietLogEveryMs) {
      const how = outage.closedAgain ? ` (it reconnected but closed again ${outage.closedAgain} times)` : '';
      this.log.warn({ server: this.name, attempts: attempt, downForSeconds: downFor, err: why, ...flapped }, `upstream still down${how}; the gateway keeps trying every ${every(b.maxDelayMs)}`);
    } else {
      return;
    }
    outage.lastLogAt = Date.now();
  }

  /** A wait that close() ends at once; its timer never keeps the process alive. */
  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => this.wake?.(), ms);
      timer.unref();
      this.wake = () => {
        clearTimeout(timer);
        this.wake = undefined;
        resolve();
      };
    });
  }

  private get connected(): Client {
    if (this.client) return this.client;
    if (this.closed) throw new UpstreamUnavailableError(this.name, `upstream ${this.name} is closed (the gateway is shutting down)`);
    const down = this.outage !== undefined ? ` for ${seconds(Date.now() - this.outage.since)} s` : '';
    throw new UpstreamUnavailableError(
      this.name,
      this.reconnecting
        ? `upstream ${this.name} is down${down} (its connection closed); the gateway is reconnecting it and retries at least every ${every(this.reconnectBackoff.maxDelayMs)}`
        : `upstream ${this.name} is down${down} and nothing is reconnecting it; restart the gateway`,
    );
  }

  /**
   * A rejected upstream request as the gateway reports it: an oversize answer becomes
   * OversizeMessageError, and the SDK's rejection of a request whose connection closed (the client is no
   * longer the live one; an upstream may send code -32000 itself) UpstreamUnavailableError.
   */
  private translated<T>(client: Client, request: Promise<T>): Promise<T> {
    return request.catch((err: unknown) => {
      const oversize = this.oversize.errorOf(err);
      if (oversize) throw oversize;
      if (err instanceof McpError && err.code === ErrorCode.ConnectionClosed && this.client !== client) {
        throw new UpstreamUnavailableError(this.name, `upstream ${this.name} closed its connection during the call; the gateway reconnects it (the call is not retried)`);
      }
      throw err;
    });
  }

  /**
   * Re-reads the tool list, all its pages within `timeoutMs`; true when any definition changed. A
   * connection that closes during the read keeps the last list and is not an error here: its close is
   * logged and reconnected like any other (an upstream that dies on tools/list would otherwise add a
   * warning to each of its reconnects). Any other failure (an error answer, no answer within
   * `timeoutMs`) leaves its tools out (`toolsUnlisted`) until a re-read succeeds, and throws
   * UpstreamListError. While the upstream is down this throws UpstreamUnavailableError at once.
   */
  async refreshTools(timeoutMs: number): Promise<boolean> {
    const client = this.connected;
    try {
      const changed = await this.readTools(client, timeoutMs);
      this.unlisted = undefined;
      return changed;
    } catch (err) {
      // The connection closed under the read (it is no longer the live one); an upstream that answers
      // with the code itself is still live, and its list failed.
      if (err instanceof UpstreamListError && err.upstreamCode === ErrorCode.ConnectionClosed && this.client !== client && !this.closed) return false;
      this.unlisted = err instanceof Error ? err.message : String(err);
      throw err;
    }
  }

  private async readTools(client: Client, timeoutMs: number): Promise<boolean> {
    if (!client.getServerCapabilities()?.tools) {
      this.toolDefs = [];
      return false;
    }
    const tools = await this.allPages('tools/list', timeoutMs, async (cursor, opts) => {
      const res = await client.listTools(cursor ? { cursor } : {}, opts);
      return { items: res.tools, nextCursor: res.nextCursor };
    });
    const next = tools.map(definitionOf);
    const changed = next.length !== this.toolDefs.length || next.some((t, i) => t.hash !== this.toolDefs[i]?.hash || t.name !== this.toolDefs[i]?.name);
    this.toolDefs = next;
    return changed;
  }

  /**
   * Every page of one list, all of them within `timeoutMs` (an upstream that pages slowly cannot stretch
   * it page by page). A timeout, an error answer or a closed connection is an UpstreamListError naming
   * the upstream and the method (with the JSON-RPC code, if any); the message is cut to 300 characters.
   */
  private async allPages<T>(method: string, timeoutMs: number, page: (cursor: string | undefined, opts: RequestOptions) => Promise<{ items: T[]; nextCursor?: string | undefined }>): Promise<T[]> {
    const deadline = Date.now() + timeoutMs;
    const late = () => new UpstreamListError(this.name, method, `upstream ${this.name} did not answer ${method} within ${timeoutMs} ms`);
    const items: T[] = [];
    let cursor: string | undefined;
    for (let n = 0; n < MAX_PAGES; n++) {
      const left = deadline - Date.now();
      if (left <= 0) throw late();
      let res: { items: T[]; nextCursor?: string | undefined };
      try {
        res = await page(cursor, { timeout: left });
      } catch (err) {
        if (err instanceof McpError && err.code === ErrorCode.RequestTimeout) throw late();
        const message = err instanceof Error ? err.message : String(err);
        const cut = message.length > MAX_LIST_ERROR_CHARS ? `${message.slice(0, MAX_LIST_ERROR_CHARS)}… (${message.length} characters)` : message;
        throw new UpstreamListError(this.name, method, `upstream ${this.name} failed ${method}: ${cut}`, err instanceof McpError ? err.code : undefined);
      }
      items.push(...res.items);
      cursor = res.nextCursor;
      if (!cursor) return items;
    }
    // Still a cursor after the last page read: what follows is left out (its tools are not listed, and a
    // call to one is UNKNOWN_TOOL). Safe, but the operator must know why a tool is missing.
    if (!this.cutLists.has(method)) {
      this.cutLists.add(method);
      this.log.warn(
        { server: this.name, method, pages: MAX_PAGES, items: items.length },
        `upstream ${this.name} answered ${method} in more than ${MAX_PAGES} pages: the gateway read the first ${MAX_PAGES} (${items.length} items) and leaves the rest out`,
      );
    }
    return items;
  }

  /**
   * Forwards a call, without the upstream's own output validation: the gateway passes results through.
   * Not while its tools are left out of tools/list (`toolsUnlisted`): such a call fails closed.
   */
  callTool(name: string, args: Record<string, unknown>, opts: { timeoutMs: number; signal: AbortSignal }): Promise<CallToolResult> {
    const client = this.connected;
    if (this.unlisted !== undefined) {
      throw new UpstreamUnavailableError(this.name, `${this.unlisted}; its tools are left out of tools/list and not called until it lists them again (list the tools again later)`);
    }
    return this.translated(
      client,
      client.request({ method: 'tools/call', params: { name, arguments: args } }, CallToolResultSchema, {
        timeout: opts.timeoutMs,
        signal: opts.signal,
      }) as Promise<CallToolResult>,
    );
  }

  /**
   * Empty while the upstream is down: one down upstream does not empty the other servers' lists. All
   * pages within `timeoutMs`; a failure or timeout is an UpstreamListError.
   */
  async listResources(timeoutMs: number): Promise<Resource[]> {
    const client = this.client;
    if (!client?.getServerCapabilities()?.resources) return [];
    return this.allPages('resources/list', timeoutMs, async (cursor, opts) => {
      const res = await client.listResources(cursor ? { cursor } : {}, opts);
      return { items: res.resources, nextCursor: res.nextCursor };
    });
  }

  /** As listResources; a server that does not implement templates (MethodNotFound) has none. */
  async listResourceTemplates(timeoutMs: number): Promise<ResourceTemplate[]> {
    const client = this.client;
    if (!client?.getServerCapabilities()?.resources) return [];
    try {
      return await this.allPages('resources/templates/list', timeoutMs, async (cursor, opts) => {
        const res = await client.listResourceTemplates(cursor ? { cursor } : {}, opts);
        return { items: res.resourceTemplates, nextCursor: res.nextCursor };
      });
    } catch (err) {
      // Templates are optional even for servers with resources.
      if (err instanceof UpstreamListError && err.upstreamCode === ErrorCode.MethodNotFound) return [];
      throw err;
    }
  }

  readResource(uri: string, opts: { timeoutMs: number; signal: AbortSignal }): Promise<ReadResourceResult> {
    const client = this.connected;
    return this.translated(client, client.readResource({ uri }, { timeout: opts.timeoutMs, signal: opts.signal }));
  }

  /** As listResources. */
  async listPrompts(timeoutMs: number): Promise<Prompt[]> {
    const client = this.client;
    if (!client?.getServerCapabilities()?.prompts) return [];
    return this.allPages('prompts/list', timeoutMs, async (cursor, opts) => {
      const res = await client.listPrompts(cursor ? { cursor } : {}, opts);
      return { items: res.prompts, nextCursor: res.nextCursor };
    });
  }

  getPrompt(name: string, args: Record<string, string> | undefined, opts: { timeoutMs: number; signal: AbortSignal }): Promise<GetPromptResult> {
    const client = this.connected;
    return this.translated(client, client.getPrompt(args ? { name, arguments: args } : { name }, { timeout: opts.timeoutMs, signal: opts.signal }));
  }

  /** Closes the connection and ends the reconnect loop: its wait and any start in progress end now. */
  async close(): Promise<void> {
    this.closed = true;
    this.wake?.();
    clearTimeout(this.stableTimer);
    const client = this.client;
    this.client = undefined;
    await Promise.all([client?.close().catch(() => {}), this.opening?.close().catch(() => {})]);
    await this.reconnecting;
  }
}

/** What a reference put into an arg (`--password=${env:PW}` → the password): what lies between the text both share. */
function substituted(reported: string, resolved: string): string {
  let start = 0;
  while (start < reported.length && start < resolved.length && reported[start] === resolved[start]) start++;
  let end = 0;
  while (end < reported.length - start && end < resolved.length - start && reported[reported.length - 1 - end] === resolved[resolved.length - 1 - end]) end++;
  return resolved.slice(start, resolved.length - end);
}

/** The most of an upstream protocol error's text the log keeps. */
export const PROTOCOL_ERROR_LOG_MAX_CHARS = 2_000;

/**
 * An upstream protocol error as the log keeps it: the SDK's text quotes the whole offending message (a
 * progress notification for a token nobody asked for, a response to an unknown id), so an upstream sending
 * 1 MB ones added 1 MB of log each, secrets and all. Cut, with its length, and masked like audit text.
 */
export function protocolErrorText(message: string): string {
  const cut = message.length > PROTOCOL_ERROR_LOG_MAX_CHARS ? `${message.slice(0, PROTOCOL_ERROR_LOG_MAX_CHARS)}… (${message.length} characters in all)` : message;
  return redactText(cut);
}
