import { createInterface } from 'node:readline';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import type { Transport } from '@modelcontextprotocol/sdk/shared/transport.js';
import {
  type CallToolResult,
  CallToolResultSchema,
  type GetPromptResult,
  type Prompt,
  PromptListChangedNotificationSchema,
  type ReadResourceResult,
  type Resource,
  type ResourceTemplate,
  type Tool,
  ToolListChangedNotificationSchema,
} from '@modelcontextprotocol/sdk/types.js';
import type { Logger } from 'pino';
import { definitionOf, type ReportedTool } from './catalog.js';
import type { UpstreamConfig } from './config.js';

// One upstream MCP server as the gateway runs it: a child process over stdio or a Streamable HTTP URL.
// The gateway's client declares no capabilities at all: no `roots` (server-filesystem would replace
// its configured directories with the agent's roots), no sampling, no elicitation.

const MAX_PAGES = 50;

export class Upstream {
  readonly name: string;
  private client: Client | undefined;
  private transport: Transport | undefined;
  private toolDefs: ReportedTool[] = [];
  private closed = false;
  /** Called when the upstream says its tools (or prompts) changed. */
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

  get capabilities() {
    return this.client?.getServerCapabilities();
  }

  get cwd(): string {
    return this.config.cwd ?? process.cwd();
  }

  async connect(timeoutMs: number): Promise<void> {
    const client = new Client({ name: 'killswitch-gateway', version: '0.1.0' }, { capabilities: {} });
    client.setNotificationHandler(ToolListChangedNotificationSchema, () => this.onListChanged?.('tools'));
    client.setNotificationHandler(PromptListChangedNotificationSchema, () => this.onListChanged?.('prompts'));
    client.onerror = (err) => this.log.warn({ server: this.name, err: err.message }, 'upstream protocol error');
    let transport: Transport;
    if (this.config.transport === 'http') {
      transport = new StreamableHTTPClientTransport(new URL(this.config.url as string), { requestInit: { headers: this.config.headers } });
    } else {
      const stdio = new StdioClientTransport({
        command: this.config.command as string,
        args: this.config.args,
        env: this.config.env,
        stderr: 'pipe',
        ...(this.config.cwd !== undefined ? { cwd: this.config.cwd } : {}),
      });
      const stderr = stdio.stderr;
      if (stderr) createInterface({ input: stderr as unknown as NodeJS.ReadableStream }).on('line', (line) => this.log.debug({ server: this.name }, `upstream: ${line}`));
      transport = stdio;
    }
    transport.onclose = () => {
      if (!this.closed) this.log.warn({ server: this.name }, 'upstream connection closed; its calls fail until the gateway restarts');
    };
    this.client = client;
    this.transport = transport;
    await client.connect(transport, { timeout: timeoutMs });
    await this.refreshTools(timeoutMs);
  }

  private get connected(): Client {
    if (!this.client) throw new Error(`upstream ${this.name} is not connected`);
    return this.client;
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
    return this.connected.request({ method: 'tools/call', params: { name, arguments: args } }, CallToolResultSchema, {
      timeout: opts.timeoutMs,
      signal: opts.signal,
    }) as Promise<CallToolResult>;
  }

  async listResources(): Promise<{ resources: Resource[]; templates: ResourceTemplate[] }> {
    const client = this.connected;
    if (!client.getServerCapabilities()?.resources) return { resources: [], templates: [] };
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
    return this.connected.readResource({ uri }, { timeout: opts.timeoutMs, signal: opts.signal });
  }

  async listPrompts(): Promise<Prompt[]> {
    const client = this.connected;
    if (!client.getServerCapabilities()?.prompts) return [];
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
    return this.connected.getPrompt(args ? { name, arguments: args } : { name }, { timeout: opts.timeoutMs, signal: opts.signal });
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.client?.close().catch(() => {});
  }
}
