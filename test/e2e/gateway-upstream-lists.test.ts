import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { type CallToolResult, ToolListChangedNotificationSchema } from '@modelcontextprotocol/sdk/types.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bearer } from '../helpers/context.js';
import { until } from '../helpers/unleash.js';
import { capturedLog, type FixtureUpstream, GatewayHarness, MEMORY_SERVER, rpcErrorOf, startFixtureUpstream, textOf } from './gateway-harness.js';

// One upstream must not take tools/list, resources/list or prompts/list away from every agent: not with
// definitions the control plane refuses in a report (a whole report is refused, 400 or 413), nor by
// failing or stalling its lists. Against the fake stdio upstream (gateway-fake-upstream.mjs) as "memory",
// beside the real server-filesystem. Own file: the fake's definitions are the first "memory" pins here.

const FAKE_UPSTREAM = fileURLToPath(new URL('./gateway-fake-upstream.mjs', import.meta.url));
const h = new GatewayHarness();

// prompter and evil (below) are in the policy for the lists role: their resources and prompts are listed
// only to tokens that may read them (gateway-resources.test.ts).
const POLICY_SERVERS = '  prompter:\n    identity: { url: "http://127.0.0.1/mcp" }\n    class: storage\n  evil:\n    identity: { command: node }\n    class: storage\n';
const POLICY_ROLES = '  lists:\n    allowed_servers: [filesystem, memory, prompter, evil]\n';

beforeAll(async () => {
  await h.start({ policyServers: POLICY_SERVERS, policyRoles: POLICY_ROLES });
  writeFileSync(join(h.dir, 'notes.md'), 'filesystem still serves\n');
}, 120_000);
afterAll(() => h.stop());

type Line = Record<string, unknown> & { msg: string; level: number };
const fake = (env: Record<string, string>) => ({ command: process.execPath, args: [FAKE_UPSTREAM], env });
const call = async (client: Client, name: string, args: Record<string, unknown> = {}) => (await client.callTool({ name, arguments: args })) as CallToolResult;
const codeOf = (r: CallToolResult) => (r._meta?.['killswitch/decision'] as { code?: string } | undefined)?.code;
const names = async (client: Client) => (await client.listTools()).tools.map((t) => t.name);
const hiddenLines = (lines: Line[]) => lines.filter((l) => l.msg.startsWith('upstream tool hidden from agents'));
const timed = async <T>(f: () => Promise<T>): Promise<[T, number]> => {
  const t0 = Date.now();
  const out = await f();
  return [out, Date.now() - t0];
};

/** The tool names the control plane stored for a server (never a hidden one). */
async function pinnedNames(server: string): Promise<string[]> {
  const res = await h.app.inject({ method: 'GET', url: `/v1/tools?server=${server}&limit=500`, headers: bearer(h.owner) });
  expect(res.statusCode).toBe(200);
  return (res.json().tools as Array<{ tool: string }>).map((t) => t.tool);
}

describe('an upstream offering definitions the control plane would refuse in a report', () => {
  it('a 300 KB description, a __proto__ key, constructor.prototype: hidden and never reported, each warned naming upstream, tool and why; the other upstream stays listed and callable; a hidden tool is UNKNOWN_TOOL', async () => {
    const { log, lines } = capturedLog();
    const gateway = await h.gateway({ mcpServers: { memory: fake({ FAKE_UPSTREAM_EXTRA_TOOLS: 'huge,proto,constructor' }) } }, log);
    const client = await h.client(gateway, await h.token('ro'));

    const listed = await names(client);
    expect(listed).toEqual(expect.arrayContaining(['read_text_file', 'list_directory', 'read_graph', 'search_nodes']));
    expect(listed.filter((n) => ['huge_description', 'proto_schema', 'constructor_schema'].includes(n))).toEqual([]);
    expect(hiddenLines(lines as Line[]).map((l) => [l['server'], l['tool'], l['reason']])).toEqual([
      ['memory', 'huge_description', 'too-large'],
      ['memory', 'proto_schema', 'forbidden-key'],
      ['memory', 'constructor_schema', 'forbidden-key'],
    ]);
    expect(hiddenLines(lines as Line[])[0]?.msg).toMatch(/memory\/huge_description: its definition is \d+ bytes of JSON, more than the 65536 one tool may take of a tool report, so it is hidden/);
    expect(hiddenLines(lines as Line[])[1]?.msg).toContain('definition.inputSchema.properties.x.__proto__');

    const read = await call(client, 'read_text_file', { path: 'notes.md' });
    expect(read.isError, textOf(read)).toBeFalsy();
    expect(textOf(read)).toContain('filesystem still serves');
    expect((await call(client, 'read_graph')).isError).toBeFalsy();

    // Fail closed: never reported, so never pinned, and a call by name is refused without asking anyone.
    const hidden = await rpcErrorOf(call(client, 'proto_schema'));
    expect(hidden).toMatchObject({ code: -32602, data: { code: 'UNKNOWN_TOOL' } });
    expect(hidden?.message).toMatch(/^MCP error -32602: UNKNOWN_TOOL: no tool named "proto_schema"/);
    expect((await pinnedNames('memory')).sort()).toEqual(['read_graph', 'search_nodes']);
  });

  it('300 KB of tools, each under the per-tool cap: the report stays under the control plane\'s 256 KiB body limit; the other upstream keeps all its tools, this one what fits', async () => {
    const { log, lines } = capturedLog();
    const gateway = await h.gateway({ mcpServers: { memory: fake({ FAKE_UPSTREAM_EXTRA_TOOLS: 'bulk' }) } }, log);
    const token = await h.token('rw');
    const client = await h.client(gateway, token);
    const fsTools = gateway.tools.filter((t) => t.server === 'filesystem').map((t) => t.name);
    expect(fsTools.length).toBeGreaterThan(10);

    // What the control plane took (an answer, not a 413), whether or not this token may call them.
    const answer = await gateway.report(token);
    const reported = answer.servers.find((s) => s.name === 'memory')?.tools.map((t) => t.name) ?? [];
    expect(reported.length).toBeGreaterThan(30);
    expect(reported.length).toBeLessThan(62);
    expect(answer.servers.find((s) => s.name === 'filesystem')?.tools.map((t) => t.name).sort()).toEqual([...fsTools].sort());
    const full = hiddenLines(lines as Line[]).filter((l) => l['reason'] === 'report-full');
    expect(full.length).toBe(62 - reported.length);
    expect(new Set(full.map((l) => l['server']))).toEqual(new Set(['memory']));

    expect(await names(client)).toEqual(expect.arrayContaining(['read_text_file', 'write_file']));
    const hiddenTool = full[0]?.['tool'] as string;
    expect(await rpcErrorOf(call(client, hiddenTool))).toMatchObject({ code: -32602, data: { code: 'UNKNOWN_TOOL' } });
  });

  it('2,100 tools (over MAX_TOOLS_PER_REPORT): the report holds the first 500 (as many as the control plane pins of one server); tools/list works and the other upstream is listed', async () => {
    const { log, lines } = capturedLog();
    const gateway = await h.gateway({ mcpServers: { memory: fake({ FAKE_UPSTREAM_EXTRA_TOOLS: 'many' }) } }, log);
    const client = await h.client(gateway, await h.token('ro'));
    const listed = await names(client);
    expect(listed).toEqual(expect.arrayContaining(['read_text_file', 'read_graph']));
    // At most 500 per server (as many names as the control plane pins of one); the rest hidden, each warned.
    expect(gateway.tools.filter((t) => t.server === 'memory')).toHaveLength(500);
    expect(hiddenLines(lines as Line[]).filter((l) => l['reason'] === 'report-full' && l['server'] === 'memory')).toHaveLength(1_602);
  }, 120_000);
});

describe('an upstream whose lists fail or stall', () => {
  it('tools/list stalls: answered within listTimeoutMs without its tools, warned once; its calls are UPSTREAM_UNAVAILABLE; once it answers again the agent is told to list again and calls it', async () => {
    const stall = join(h.scratch, 'tools-stall');
    const { log, lines } = capturedLog();
    const gateway = await h.gateway({ mcpServers: { memory: fake({ FAKE_UPSTREAM_LIST_STALL: stall }) }, killswitch: { listTimeoutMs: 1000 } }, log);
    const client = await h.client(gateway, await h.token('ro'));
    let listChanged = 0;
    client.setNotificationHandler(ToolListChangedNotificationSchema, () => {
      listChanged++;
    });
    expect(await names(client)).toEqual(expect.arrayContaining(['read_graph', 'read_text_file']));

    writeFileSync(stall, 'tools/list is never answered');
    const other = await h.client(gateway, await h.token('ro'));
    for (const agent of [client, other, client]) {
      const [listed, ms] = await timed(() => names(agent));
      expect(ms).toBeLessThan(8_000);
      expect(listed).toContain('read_text_file');
      expect(listed).not.toContain('read_graph');
    }
    const warned = (lines as Line[]).filter((l) => l['server'] === 'memory' && l.level === 40);
    expect(warned.map((l) => l.msg)).toEqual([
      'upstream memory did not answer tools/list within 1000 ms: its tools are left out of tools/list and its calls answer UPSTREAM_UNAVAILABLE until it lists them again',
    ]);

    // Fail closed: held from an earlier list, a call is decided and then refused without reaching it.
    const refused = await call(client, 'read_graph');
    expect(refused.isError).toBe(true);
    expect(codeOf(refused)).toBe('UPSTREAM_UNAVAILABLE');
    expect(textOf(refused)).toMatch(/^UPSTREAM_UNAVAILABLE: upstream memory did not answer tools\/list within 1000 ms; its tools are left out of tools\/list/);
    expect((await call(client, 'read_text_file', { path: 'notes.md' })).isError).toBeFalsy();

    rmSync(stall);
    const before = listChanged;
    await until(() => listChanged > before, 20_000, 'list_changed once the upstream lists its tools again');
    expect(await names(client)).toEqual(expect.arrayContaining(['read_graph', 'read_text_file']));
    const served = await call(client, 'read_graph');
    expect(served.isError, textOf(served)).toBeFalsy();
    expect((lines as Line[]).some((l) => l['server'] === 'memory' && l.msg === 'upstream memory answers its tools list again')).toBe(true);
  }, 60_000);

  it('tools/list answers an error: its tools left out at once, the warning quotes the error cut to 300 characters', async () => {
    const broken = join(h.scratch, 'tools-error');
    const { log, lines } = capturedLog();
    const gateway = await h.gateway({ mcpServers: { memory: fake({ FAKE_UPSTREAM_LIST_ERROR: broken }) } }, log);
    const client = await h.client(gateway, await h.token('ro'));
    expect(await names(client)).toContain('read_graph');
    writeFileSync(broken, 'lists fail');
    const [listed, ms] = await timed(() => names(client));
    expect(ms).toBeLessThan(5_000);
    expect(listed).toContain('read_text_file');
    expect(listed).not.toContain('read_graph');
    const warned = (lines as Line[]).find((l) => l['server'] === 'memory' && l.level === 40);
    expect(warned?.msg).toMatch(/^upstream memory failed tools\/list: MCP error -32603: tools\/list is broken: e{200,}… \(\d+ characters\): its tools are left out/);
    expect(warned!.msg.length).toBeLessThan(600);
    rmSync(broken);
    expect(await names(client)).toContain('read_graph');
  });

  describe('resources/list, resources/templates/list and prompts/list', () => {
    let fixture: FixtureUpstream;
    beforeAll(async () => {
      fixture = await startFixtureUpstream();
    });
    afterAll(() => fixture?.close());

    it('one upstream stalls or fails: the others are listed within listTimeoutMs; a session that did not declare it does not wait for it; back once it answers', async () => {
      const stall = join(h.scratch, 'lists-stall');
      const broken = join(h.scratch, 'lists-error');
      const { log, lines } = capturedLog();
      const gateway = await h.gateway(
        {
          mcpServers: {
            filesystem: { disabled: true },
            memory: { command: process.execPath, args: [MEMORY_SERVER], env: { MEMORY_FILE_PATH: join(h.scratch, 'lists-memory.jsonl') } },
            prompter: { url: fixture.url },
            evil: fake({ FAKE_UPSTREAM_LIST_STALL: stall, FAKE_UPSTREAM_LIST_ERROR: broken, FAKE_UPSTREAM_PROMPTS: '1' }),
          },
          killswitch: { listTimeoutMs: 2000 },
        },
        log,
      );
      const all = await h.client(gateway, await h.token('ro', 'lists'));
      const memoryOnly = await h.client(gateway, await h.token('ro', 'lists'), { scope: { servers: ['memory'] } });
      const uris = async (c: Client) => (await c.listResources()).resources.map((r) => r.uri);
      const prompts = async (c: Client) => (await c.listPrompts()).prompts.map((p) => p.name);
      expect(await uris(all)).toEqual(expect.arrayContaining(['fake://table']));
      expect((await uris(all)).some((u) => u.startsWith('memory://'))).toBe(true);
      expect(await prompts(all)).toEqual(expect.arrayContaining(['summarise_graph', 'fake_prompt']));

      writeFileSync(stall, 'lists are never answered');
      const [stalled, ms] = await timed(() => uris(all));
      expect(ms).toBeGreaterThanOrEqual(1_900);
      expect(ms).toBeLessThan(10_000);
      expect(stalled.some((u) => u.startsWith('memory://'))).toBe(true);
      expect(stalled).not.toContain('fake://table');
      expect((await all.listResourceTemplates()).resourceTemplates.map((t) => t.uriTemplate)).not.toContain('fake://table/{row}');
      expect(await prompts(all)).toEqual(['summarise_graph']);
      // evil is not its server: not asked, so not waited for.
      const [scoped, scopedMs] = await timed(() => uris(memoryOnly));
      expect(scopedMs).toBeLessThan(1_500);
      expect(scoped.every((u) => u.startsWith('memory://'))).toBe(true);
      expect(scoped.length).toBeGreaterThan(0);
      const warned = (lines as Line[]).filter((l) => l['server'] === 'evil' && l.level === 40).map((l) => l.msg);
      expect(warned).toEqual([
        'upstream evil did not answer resources/list within 2000 ms: its resources are left out of resources/list until it answers again',
        'upstream evil did not answer resources/templates/list within 2000 ms: its resource templates are left out of resources/templates/list until it answers again',
        'upstream evil did not answer prompts/list within 2000 ms: its prompts are left out of prompts/list until it answers again',
      ]);

      rmSync(stall);
      writeFileSync(broken, 'lists fail');
      const [failed, failedMs] = await timed(() => uris(all));
      expect(failedMs).toBeLessThan(1_500);
      expect(failed).not.toContain('fake://table');
      expect(failed.some((u) => u.startsWith('memory://'))).toBe(true);
      expect(await prompts(all)).toEqual(['summarise_graph']);

      rmSync(broken);
      expect(await uris(all)).toContain('fake://table');
      expect(await prompts(all)).toContain('fake_prompt');
      expect((lines as Line[]).filter((l) => l['server'] === 'evil' && /^upstream evil answers its (resources|prompts) list again$/.test(l.msg))).toHaveLength(2);
    }, 60_000);
  });
});
