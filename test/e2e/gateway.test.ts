import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { InMemoryTransport } from '@modelcontextprotocol/sdk/inMemory.js';
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import { InitializeResultSchema, LATEST_PROTOCOL_VERSION, ListRootsRequestSchema } from '@modelcontextprotocol/sdk/types.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bearer } from '../helpers/context.js';
import { until } from '../helpers/unleash.js';
import { capturedLog, GatewayHarness, textOf } from './gateway-harness.js';

// SDK Client → gateway → real server-filesystem (and server-memory) over stdio, with the real control
// plane, Unleash, Redis and Postgres.

const h = new GatewayHarness();
const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const FAKE_UPSTREAM = fileURLToPath(new URL('./gateway-fake-upstream.mjs', import.meta.url));

beforeAll(async () => {
  await h.start();
  writeFileSync(join(h.dir, 'readme.md'), '# hello from the allowed directory\n');
  writeFileSync(join(h.dir, 'big.txt'), 'x'.repeat(2 * 1_048_576));
  writeFileSync(join(h.scratch, 'outside.md'), 'secret outside the allowed directory\n');
}, 120_000);
afterAll(() => h.stop());

const call = async (client: Awaited<ReturnType<GatewayHarness['client']>>, name: string, args: Record<string, unknown>) =>
  (await client.callTool({ name, arguments: args })) as CallToolResult;

describe('read-only and read-write tokens', () => {
  it('an ro token sees no write tools, reads a file, and gets PERMISSION_DENIED on write_file', async () => {
    const token = await h.token('ro');
    const gateway = await h.gateway({ agentToken: token });
    const client = await h.client(gateway, token);
    const names = (await client.listTools()).tools.map((t) => t.name);
    expect(names).toContain('read_text_file');
    expect(names).not.toContain('write_file');

    const read = await call(client, 'read_text_file', { path: 'readme.md' });
    expect(read.isError).toBeFalsy();
    expect(textOf(read)).toContain('hello from the allowed directory');

    const write = await call(client, 'write_file', { path: 'ro.md', content: 'nope' });
    expect(write.isError).toBe(true);
    expect(textOf(write)).toMatch(/^PERMISSION_DENIED: /);
    expect(existsSync(join(h.dir, 'ro.md'))).toBe(false);
  });

  it('an rw token sees and calls write_file', async () => {
    const token = await h.token('rw');
    const gateway = await h.gateway();
    const client = await h.client(gateway, token);
    expect((await client.listTools()).tools.map((t) => t.name)).toContain('write_file');
    const write = await call(client, 'write_file', { path: 'rw.md', content: 'written through the gateway' });
    expect(write.isError).toBeFalsy();
    expect(readFileSync(join(h.dir, 'rw.md'), 'utf8')).toBe('written through the gateway');
  });
});

describe("tools/list shows only what the session's declared scope may call", () => {
  it('config session {readOnly, servers: [filesystem]}: no write tools, no memory tools; a hidden write called anyway still halts', async () => {
    const token = await h.token('rw');
    const gateway = await h.gateway({ memory: true, killswitch: { session: { readOnly: true, servers: ['filesystem'] } } });
    const client = await h.client(gateway, token);
    const names = (await client.listTools()).tools.map((t) => t.name);
    expect(names).toContain('read_text_file');
    for (const hidden of ['write_file', 'edit_file', 'create_directory', 'move_file', 'read_graph', 'create_entities']) expect(names).not.toContain(hidden);

    const write = await call(client, 'write_file', { path: 'scoped.md', content: 'x' });
    expect(textOf(write)).toMatch(/^PERMISSION_DENIED: /);
    expect(existsSync(join(h.dir, 'scoped.md'))).toBe(false);
    expect(textOf(await call(client, 'read_text_file', { path: 'readme.md' }))).toMatch(/^SESSION_HALTED: /);
  });

  it('client capabilities.experimental.killswitch {read_only: true}: only the read tools of every server; with servers: [memory] only memory reads', async () => {
    const token = await h.token('rw');
    const gateway = await h.gateway({ memory: true });
    const readOnly = (await (await h.client(gateway, token, { scope: { read_only: true } })).listTools()).tools.map((t) => t.name);
    expect(readOnly).toEqual(expect.arrayContaining(['read_text_file', 'list_directory', 'read_graph', 'search_nodes']));
    for (const hidden of ['write_file', 'edit_file', 'create_entities', 'delete_entities', 'add_observations']) expect(readOnly).not.toContain(hidden);

    const other = await h.token('rw');
    const memoryOnly = (await (await h.client(gateway, other, { scope: { read_only: true, servers: ['memory'] } })).listTools()).tools.map((t) => t.name);
    expect(memoryOnly).toEqual(expect.arrayContaining(['read_graph', 'search_nodes']));
    for (const hidden of ['read_text_file', 'write_file', 'create_entities']) expect(memoryOnly).not.toContain(hidden);
  });
});

describe('tool names', () => {
  it('depend on the gateway config only: a configured server the policy does not list is hidden, yet the name it shares stays namespaced', async () => {
    const token = await h.token('rw');
    // notes offers read_graph and search_nodes, as memory does; the policy knows no server "notes".
    const { log, lines } = capturedLog();
    const gateway = await h.gateway({ agentToken: token, memory: true, mcpServers: { notes: { command: process.execPath, args: [FAKE_UPSTREAM], cwd: ROOT } } }, log);
    // The gateway's log says so at start (its report with the configured agent token) and when a session opens.
    const notInPolicy = lines.filter((l) => l['level'] === 40 && l['server'] === 'notes');
    expect(notInPolicy.map((l) => l['msg'])).toEqual([expect.stringMatching(/^upstream server notes is not in the control plane's policy: .* denied UNKNOWN_SERVER$/)]);
    const client = await h.client(gateway, token);
    const names = (await client.listTools()).tools.map((t) => t.name);
    // The session opens after initialize, beside the listing: its warning may come after the list.
    const warned = () => lines.filter((l) => l['level'] === 40 && String(l['msg']).startsWith('control-plane session warning:'));
    await until(() => warned().length > 0, 10_000, 'the session warning');
    expect(warned()).toEqual([expect.objectContaining({ field: 'servers.2', msg: expect.stringContaining('"notes" is not a server of the policy') })]);
    expect(names).toEqual(expect.arrayContaining(['read_text_file', 'create_entities', 'memory__read_graph', 'memory__search_nodes']));
    for (const absent of ['read_graph', 'search_nodes', 'notes__read_graph', 'notes__search_nodes']) expect(names).not.toContain(absent);
    expect((await call(client, 'memory__read_graph', {})).isError).toBeFalsy();
    // Nor on the session's declared scope.
    const memoryOnly = await h.client(gateway, await h.token('rw'), { scope: { servers: ['memory'] } });
    expect((await memoryOnly.listTools()).tools.map((t) => t.name)).toEqual(expect.arrayContaining(['memory__read_graph', 'memory__search_nodes']));
  });
});

describe('cascade writes', () => {
  it('a.md and <dir>/a.md are one resource; a third different file answers CASCADE_WRITE and the session stays halted', async () => {
    const token = await h.token('rw');
    const gateway = await h.gateway();
    const client = await h.client(gateway, token);
    for (const path of ['c1.md', join(h.dir, 'c1.md'), 'c2.md']) {
      const r = await call(client, 'write_file', { path, content: path });
      expect(r.isError, textOf(r)).toBeFalsy();
    }
    const third = await call(client, 'write_file', { path: 'c3.md', content: 'third' });
    expect(third.isError).toBe(true);
    expect(textOf(third)).toMatch(/^CASCADE_WRITE: /);
    expect(textOf(third)).toMatch(/halted/);
    expect(existsSync(join(h.dir, 'c3.md'))).toBe(false);

    const after = await call(client, 'read_text_file', { path: 'readme.md' });
    expect(after.isError).toBe(true);
    expect(textOf(after)).toMatch(/^SESSION_HALTED: /);
  });

  it('memory tools with no resource argument are one resource: three writes are not a cascade', async () => {
    const token = await h.token('rw');
    const gateway = await h.gateway({ memory: true });
    const client = await h.client(gateway, token);
    for (const name of ['Ada', 'Grace', 'Edsger']) {
      const r = await call(client, 'create_entities', { entities: [{ name, entityType: 'person', observations: [`${name} was here`] }] });
      expect(r.isError, textOf(r)).toBeFalsy();
    }
    const graph = await call(client, 'read_graph', {});
    expect(textOf(graph)).toContain('Edsger');
  });
});

describe('large results', () => {
  it('a 2 MB file in a session without permission for large results is withheld and halts the session', async () => {
    const token = await h.token('ro');
    const gateway = await h.gateway();
    const client = await h.client(gateway, token);
    const big = await call(client, 'read_text_file', { path: 'big.txt' });
    expect(big.isError).toBe(true);
    expect(textOf(big)).toMatch(/^LARGE_RESULT: The result is \d+ bytes, over the \d+-byte limit for results without permission, so it was withheld\. This token is now halted \(LARGE_RESULT\)/);
    expect(textOf(big)).not.toContain('withhold it');
    expect(textOf(big)).not.toMatch(/Session \S+ is halted \(trigger/);
    expect(textOf(big)).not.toContain('xxxxxxxxxx');
    expect(JSON.stringify(big).length).toBeLessThan(10_000);

    const next = await call(client, 'read_text_file', { path: 'readme.md' });
    expect(next.isError).toBe(true);
    expect(textOf(next)).toMatch(/^SESSION_HALTED: /);
  });
});

describe('roots', () => {
  it('the client roots are never forwarded: server-filesystem keeps its configured directory', async () => {
    const token = await h.token('ro');
    const gateway = await h.gateway();
    const client = await h.client(gateway, token, { roots: true });
    let rootsAsked = 0;
    client.setRequestHandler(ListRootsRequestSchema, async () => {
      rootsAsked++;
      return { roots: [{ uri: `file://${h.scratch}`, name: 'elsewhere' }] };
    });
    await client.sendRootsListChanged();
    const outside = await call(client, 'read_text_file', { path: join(h.scratch, 'outside.md') });
    expect(outside.isError).toBe(true);
    expect(textOf(outside)).not.toContain('secret outside');
    const allowed = await call(client, 'list_allowed_directories', {});
    expect(textOf(allowed)).toContain(h.dir);
    expect(textOf(allowed)).not.toContain(h.scratch);
    expect(rootsAsked).toBe(0);
  });
});

describe('audit', () => {
  it('every call has an INTENT row, and every allowed call a RESULT row', async () => {
    const token = await h.token('rw');
    const gateway = await h.gateway();
    const client = await h.client(gateway, token);
    await call(client, 'read_text_file', { path: 'readme.md' });
    await call(client, 'write_file', { path: 'audited.md', content: 'audit me' });
    const tokenId = (await h.app.inject({ method: 'GET', url: '/v1/keys?type=rw', headers: bearer(h.owner) })).json().keys.find((k: { display_prefix: string }) => token.startsWith(k.display_prefix)).id;
    const rows = await h.auditRows('token_id = $1', [tokenId], (r) => r.filter((x) => x['kind'] === 'RESULT').length >= 2);
    const pairs = rows.map((r) => `${r['kind']} ${r['tool']} ${r['decision'] ?? ''}${r['result_status'] ?? ''}`.trim());
    expect(pairs).toEqual(expect.arrayContaining(['INTENT read_text_file allow', 'RESULT read_text_file success', 'INTENT write_file allow', 'RESULT write_file success']));
    const result = rows.find((r) => r['kind'] === 'RESULT' && r['tool'] === 'read_text_file');
    expect(Number(result?.['result_bytes'])).toBeGreaterThan(0);
    const intent = rows.find((r) => r['kind'] === 'INTENT' && r['tool'] === 'write_file');
    expect(intent?.['client_name']).toBe('e2e-agent');
    expect(intent?.['decision_id']).toBe(rows.find((r) => r['kind'] === 'RESULT' && r['tool'] === 'write_file')?.['decision_id']);
  });

  it("a client whose name and version hold a line break, ESC or a bidirectional override still gets its calls decided: the gateway sends them as spaces (the control plane refuses them)", async () => {
    const token = await h.token('ro');
    const gateway = await h.gateway();
    const [clientSide, serverSide] = InMemoryTransport.createLinkedPair();
    await gateway.attach(serverSide, { agentToken: token });
    const client = new Client({ name: 'evil\nALERT: all clear\u001b[2K\u202Eagent', version: '1.0\u009B' });
    await client.connect(clientSide);
    try {
      const read = await call(client, 'read_text_file', { path: 'readme.md' });
      expect(read.isError, textOf(read)).toBeFalsy();
      const tokenId = (await h.app.inject({ method: 'GET', url: '/v1/keys?type=ro', headers: bearer(h.owner) })).json().keys.find((k: { display_prefix: string }) => token.startsWith(k.display_prefix)).id;
      const rows = await h.auditRows("token_id = $1 AND kind = 'INTENT'", [tokenId], (r) => r.length > 0);
      expect(rows[0]?.['client_name']).toBe('evil ALERT: all clear [2K agent');
    } finally {
      await client.close();
    }
  });

  it('a 156-character client name is audited whole; one over the 200 characters a decision takes is cut to 200, never within a character: 199 letters and an emoji are the 199 letters', async () => {
    const token = await h.token('ro');
    const gateway = await h.gateway();
    const names = [`${'long client name '.repeat(9)}end`, `${'a'.repeat(199)}\u{1F600} and more`];
    for (const name of names) {
      const [clientSide, serverSide] = InMemoryTransport.createLinkedPair();
      await gateway.attach(serverSide, { agentToken: token });
      const client = new Client({ name, version: '1.0' });
      await client.connect(clientSide);
      try {
        const read = await call(client, 'read_text_file', { path: 'readme.md' });
        expect(read.isError, textOf(read)).toBeFalsy();
      } finally {
        await client.close();
      }
    }
    const tokenId = (await h.app.inject({ method: 'GET', url: '/v1/keys?type=ro', headers: bearer(h.owner) })).json().keys.find((k: { display_prefix: string }) => token.startsWith(k.display_prefix)).id;
    const rows = await h.auditRows("token_id = $1 AND kind = 'INTENT'", [tokenId], (r) => r.length >= 2);
    expect(rows.map((r) => r['client_name'])).toEqual([names[0], 'a'.repeat(199)]);
  });

  it('a second initialize does not rename the client in later audit rows', async () => {
    const token = await h.token('ro');
    const gateway = await h.gateway();
    const client = await h.client(gateway, token);
    const again = await client.request(
      { method: 'initialize', params: { protocolVersion: LATEST_PROTOCOL_VERSION, capabilities: {}, clientInfo: { name: 'someone-else', version: '9' } } },
      InitializeResultSchema,
    );
    expect(again.serverInfo).toBeDefined();
    await client.notification({ method: 'notifications/initialized' });
    const read = await call(client, 'read_text_file', { path: 'readme.md' });
    expect(read.isError, textOf(read)).toBeFalsy();
    const tokenId = (await h.app.inject({ method: 'GET', url: '/v1/keys?type=ro', headers: bearer(h.owner) })).json().keys.find((k: { display_prefix: string }) => token.startsWith(k.display_prefix)).id;
    const rows = await h.auditRows("token_id = $1 AND kind = 'INTENT'", [tokenId], (r) => r.length > 0);
    expect(rows.map((r) => r['client_name'])).toEqual(['e2e-agent']);
  });

  it('a denied call has its INTENT row (deny, with the code) and no RESULT: it never ran', async () => {
    const token = await h.token('ro');
    const gateway = await h.gateway();
    const client = await h.client(gateway, token);
    const denied = await call(client, 'write_file', { path: 'denied.md', content: 'no' });
    const decisionId = (denied._meta?.['killswitch/decision'] as { decision_id?: string } | undefined)?.decision_id;
    expect(decisionId).toBeTruthy();
    const rows = await h.auditRows('decision_id = $1', [decisionId], (r) => r.length > 0);
    expect(rows.map((r) => `${r['kind']} ${r['tool']} ${r['decision']} ${r['code']}`)).toEqual(['INTENT write_file deny PERMISSION_DENIED']);
  });
});
