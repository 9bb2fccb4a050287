import { createInterface } from 'node:readline';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import type { Transport } from '@modelcontextprotocol/sdk/shared/transport.js';
import {
  type CallToolResult,
  CallToolResultSchema,
  ErrorCode,
  type GetPromptResult,
  McpError,
  type Prompt,
  PromptListChangedNotificationSchema,
  type ReadResourceResult,
  type Resource,
  type ResourceTemplate,
  type ServerCapabilities,
  type Tool,
  ToolListChangedNotificationSchema,
} from '@modelcontextprotocol/sdk/types.js';
import type { Logger } from 'pino';
import { definitionOf, type ReportedTool } from './catalog.js';
import type { UpstreamConfig } from './config.js';
import { fetchWithin, installMessageBuffer, messageLimitBytes, OversizeAnswers, StdioMessageBuffer } from './message-size.js';

// One upstream MCP server as the gateway runs it: a child process over stdio or a Streamable HTTP URL.
// The gateway's client declares no capabilities at all: no `roots` (server-filesystem would replace
// its configured directories with the agent's roots), no sampling, no elicitation.
//
// One upstream serves every agent of the gateway, so one agent must not be able to take it away from
// the others: a message over the size limit is discarded (message-size.ts), and a connection that
// closes unexpectedly (the process crashed, was killed) is reopened with backoff. While it is down,
// calls fail at once with UpstreamUnavailableError; they never wait for it.

const MAX_PAGES = 50;
/** Reconnect attempts after an unexpected close: 0.5 s, 1 s, 2 s ... then every 30 s, ~2.5 min in all. */
const RECONNECT_ATTEMPTS = 10;
const RECONNECT_FIRST_DELAY_MS = 500;
const RECONNECT_MAX_DELAY_MS = 30_000;

/** The upstream cannot take calls now (its connection closed; the gateway is reconnecting, or gave up). */
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
  private serverCapabilities: ServerCapabilities | undefined;
  private closed = false;
  private reconnecting: Promise<void> | undefined;
  private downSince: number | undefined;
  private gaveUp = false;
  private startTimeoutMs = 30_000;
  private readonly oversize = new OversizeAnswers();
  /** Called when the upstream says its tools (or prompts) changed, and after it reconnected. */
  onListChanged: ((kind: 'tools' | 'prompts') => void) | undefined;

  constructor(
    readonly config: UpstreamConfig,
    private readonly log: Logger,
  ) {
    this.name = config.name;
  }

  get tools(): readonly ReportedTool[] {
    return this.toolDefs;
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
    await this.refreshTools(timeoutMs);
  }

  /** One connection: a new client and transport, live only once initialize succeeded. */
  private async open(timeoutMs: number): Promise<void> {
    const client = new Client({ name: 'killswitch-gateway', version: '0.1.0' }, { capabilities: {} });
    client.setNotificationHandler(ToolListChangedNotificationSchema, () => this.onListChanged?.('tools'));
    client.setNotificationHandler(PromptListChangedNotificationSchema, () => this.onListChanged?.('prompts'));
    client.onerror = (err) => this.log.warn({ server: this.name, err: err.message }, 'upstream protocol error');
    const limit = this.messageLimitBytes;
    let transport: Transport;
    if (this.config.transport === 'http') {
      transport = new StreamableHTTPClientTransport(new URL(this.config.url as string), { requestInit: { headers: this.config.headers }, fetch: fetchWithin(limit, this.oversize) });
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
      if (stderr) createInterface({ input: stderr as unknown as NodeJS.ReadableStream }).on('line', (line) => this.log.debug({ server: this.name }, `upstream: ${line}`));
      transport = stdio;
    }
    transport.onclose = () => {
      if (this.client !== client) return;
      this.client = undefined;
      if (this.closed) return;
      this.downSince = Date.now();
      this.log.warn({ server: this.name }, 'upstream connection closed; its calls fail with UPSTREAM_UNAVAILABLE while the gateway reconnects it');
      this.scheduleReconnect();
    };
    try {
      await client.connect(transport, { timeout: timeoutMs });
    } catch (err) {
      await client.close().catch(() => {});
      throw err;
    }
    if (this.closed) {
      await client.close().catch(() => {});
      throw new UpstreamUnavailableError(this.name, `upstream ${this.name} is closed`);
    }
    this.serverCapabilities = client.getServerCapabilities();
    this.client = client;
    this.downSince = undefined;
    this.gaveUp = false;
  }

  /** Reopens a connection that closed unexpectedly: bounded attempts with backoff, then the tools re-read. */
  private scheduleReconnect(): void {
    if (this.reconnecting || this.closed) return;
    this.reconnecting = (async () => {
      for (let attempt = 0; attempt < RECONNECT_ATTEMPTS; attempt++) {
        await new Promise((r) => setTimeout(r, Math.min(RECONNECT_FIRST_DELAY_MS * 2 ** attempt, RECONNECT_MAX_DELAY_MS)).unref());
        if (this.closed) return;
        try {
          await this.open(this.startTimeoutMs);
          this.log.info({ server: this.name, attempt: attempt + 1 }, 'upstream reconnected');
          this.onListChanged?.('tools');
          return;
        } catch (err) {
          this.log.warn({ server: this.name, attempt: attempt + 1, err: (err as Error).message }, 'upstream reconnect failed');
        }
      }
      this.gaveUp = true;
      this.log.error({ server: this.name, attempts: RECONNECT_ATTEMPTS }, 'upstream stays down; its calls fail with UPSTREAM_UNAVAILABLE until the gateway restarts');
    })().finally(() => {
      this.reconnecting = undefined;
    });
  }

  private get connected(): Client {
    if (this.client) return this.client;
    const down = this.downSince !== undefined ? ` for ${Math.round((Date.now() - this.downSince) / 1000)} s` : '';
    throw new UpstreamUnavailableError(
      this.name,
      this.gaveUp
        ? `upstream ${this.name} is down${down} and the gateway gave up reconnecting it; restart the gateway`
        : `upstream ${this.name} is down${down} (its connection closed); the gateway is reconnecting it, try again shortly`,
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

  /** Re-reads the tool list; true when any definition changed. */
  async refreshTools(timeoutMs?: number): Promise<boolean> {
    const client = this.connected;
    if (!client.getServerCapabilities()?.tools) {
      this.toolDefs = [];
      return false;
    }
    const tools: Tool[] = [];
    let cursor: string | undefined;
    for (let page = 0; page < MAX_PAGES; page++) {
      const res = await client.listTools(cursor ? { cursor } : {}, timeoutMs ? { timeout: timeoutMs } : undefined);
      tools.push(...res.tools);
      cursor = res.nextCursor;
      if (!cursor) break;
    }
    const next = tools.map(definitionOf);
    const changed = next.length !== this.toolDefs.length || next.some((t, i) => t.hash !== this.toolDefs[i]?.hash || t.name !== this.toolDefs[i]?.name);
    this.toolDefs = next;
    return changed;
  }

  /** Forwards a call, without the upstream's own output validation: the gateway passes results through. */
  callTool(name: string, args: Record<string, unknown>, opts: { timeoutMs: number; signal: AbortSignal }): Promise<CallToolResult> {
    const client = this.connected;
    return this.translated(
      client,
      client.request({ method: 'tools/call', params: { name, arguments: args } }, CallToolResultSchema, {
        timeout: opts.timeoutMs,
        signal: opts.signal,
      }) as Promise<CallToolResult>,
    );
  }

  /** Empty while the upstream is down: one down upstream does not empty the other servers' lists. */
  async listResources(): Promise<{ resources: Resource[]; templates: ResourceTemplate[] }> {
    const client = this.client;
    if (!client?.getServerCapabilities()?.resources) return { resources: [], templates: [] };
    const resources: Resource[] = [];
    const templates: ResourceTemplate[] = [];
    let cursor: string | undefined;
    for (let page = 0; page < MAX_PAGES; page++) {
      const res = await client.listResources(cursor ? { cursor } : {});
      resources.push(...res.resources);
      cursor = res.nextCursor;
      if (!cursor) break;
    }
    try {
      const res = await client.listResourceTemplates({});
      templates.push(...res.resourceTemplates);
    } catch {
      // templates are optional even for servers with resources
    }
    return { resources, templates };
  }

  readResource(uri: string, opts: { timeoutMs: number; signal: AbortSignal }): Promise<ReadResourceResult> {
    const client = this.connected;
    return this.translated(client, client.readResource({ uri }, { timeout: opts.timeoutMs, signal: opts.signal }));
  }

  async listPrompts(): Promise<Prompt[]> {
    const client = this.client;
    if (!client?.getServerCapabilities()?.prompts) return [];
    const prompts: Prompt[] = [];
    let cursor: string | undefined;
    for (let page = 0; page < MAX_PAGES; page++) {
      const res = await client.listPrompts(cursor ? { cursor } : {});
      prompts.push(...res.prompts);
      cursor = res.nextCursor;
      if (!cursor) break;
    }
    return prompts;
  }

  getPrompt(name: string, args: Record<string, string> | undefined, opts: { timeoutMs: number; signal: AbortSignal }): Promise<GetPromptResult> {
    const client = this.connected;
    return this.translated(client, client.getPrompt(args ? { name, arguments: args } : { name }, { timeout: opts.timeoutMs, signal: opts.signal }));
  }

  async close(): Promise<void> {
    this.closed = true;
    const client = this.client;
    this.client = undefined;
    await client?.close().catch(() => {});
  }
}
