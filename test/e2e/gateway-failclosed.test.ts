// biome-ignore-all lint/suspicious/noTemplateCurlyInString: ${env:NAME} and ${file:/path} are the config syntax under test, not template strings.
import { existsSync, mkdtempSync } from 'node:fs';
import { createServer as createHttpServer } from 'node:http';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { InMemoryTransport } from '@modelcontextprotocol/sdk/inMemory.js';
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseGatewayConfig } from '../../src/gateway/config.js';
import { Gateway } from '../../src/gateway/gateway.js';
import { until } from '../helpers/unleash.js';
import { capturedLog, MEMORY_SERVER, rpcErrorOf, textOf } from './gateway-harness.js';

// Fail closed: a control plane that does not answer in time, or cannot be reached, means no call runs.
// The upstream is the real server-memory; the "control plane" is a socket that accepts and never answers.

const scratch = mkdtempSync(join(tmpdir(), 'ks-gw-failclosed-'));
const memoryFile = join(scratch, 'memory.jsonl');
const sockets = new Set<Socket>();
let silent: Server;
let silentPort: number;
const gateways: Gateway[] = [];

beforeAll(async () => {
  silent = createServer((s) => {
    sockets.add(s);
    s.on('error', () => {});
  });
  await new Promise<void>((r) => silent.listen(0, '127.0.0.1', () => r()));
  silentPort = (silent.address() as { port: number }).port;
});
afterAll(async () => {
  for (const g of gateways) await g.close();
  for (const s of sockets) s.destroy();
  await new Promise<void>((r) => silent.close(() => r()));
});

async function connect(url: string, timeoutMs: number, log = pino({ level: 'silent' })): Promise<{ client: Client; gateway: Gateway }> {
  const config = parseGatewayConfig(
    JSON.stringify({ mcpServers: { memory: { command: process.execPath, args: [MEMORY_SERVER], env: { MEMORY_FILE_PATH: memoryFile } } }, killswitch: { url, gatewayKey: '${env:K}', timeoutMs } }),
    join(scratch, 'gateway.json'),
    { K: 'ksgw_not_checked_here' },
  );
  const gateway = await Gateway.start(config, log);
  gateways.push(gateway);
  const [a, b] = InMemoryTransport.createLinkedPair();
  await gateway.attach(b, { agentToken: 'mcp_rw_not_checked_here' });
  const client = new Client({ name: 'failclosed', version: '1' });
  await client.connect(a);
  return { client, gateway };
}

/**
 * Runs `run` against an HTTP server that answers every request 200 with `answer(url)` as JSON: a proxy or
 * a wrong URL in the control plane's place. `asked` lists the paths requested, in order.
 */
async function withImpostor(answer: (url: string) => unknown, run: (url: string, asked: string[]) => Promise<void>): Promise<void> {
  const asked: string[] = [];
  const impostor = createHttpServer((req, res) => {
    asked.push(req.url ?? '');
    req.resume();
    req.on('end', () => {
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify(answer(req.url ?? '')));
    });
  });
  await new Promise<void>((r) => impostor.listen(0, '127.0.0.1', () => r()));
  try {
    await run(`http://127.0.0.1:${(impostor.address() as { port: number }).port}`, asked);
  } finally {
    impostor.closeAllConnections();
    await new Promise<void>((r) => impostor.close(() => r()));
  }
}

describe('control plane unavailable', () => {
  it('no answer within the timeout: the call is denied with DEPENDENCY_UNAVAILABLE and never reaches the upstream', async () => {
    const { client } = await connect(`http://127.0.0.1:${silentPort}`, 300);
    // The silent control plane never answers: only the gateway's own timeout can end the call.
    const r = (await client.callTool({ name: 'create_entities', arguments: { entities: [{ name: 'Ada', entityType: 'person', observations: [] }] } })) as CallToolResult;
    expect(r.isError).toBe(true);
    expect(textOf(r)).toMatch(/^DEPENDENCY_UNAVAILABLE: control plane did not answer \/v1\/sessions within 300 ms/);
    expect(existsSync(memoryFile)).toBe(false);
  });

  it('unreachable control plane: tools/list fails rather than showing tools nobody decided on', async () => {
    const closed = createServer();
    await new Promise<void>((r) => closed.listen(0, '127.0.0.1', () => r()));
    const port = (closed.address() as { port: number }).port;
    await new Promise<void>((r) => closed.close(() => r()));
    const { log, lines } = capturedLog();
    const { client } = await connect(`http://127.0.0.1:${port}`, 1000, log);
    await expect(client.listTools()).rejects.toThrow(/DEPENDENCY_UNAVAILABLE: cannot list tools/);
    await expect(client.listTools()).rejects.toMatchObject({ code: -32603, data: { code: 'DEPENDENCY_UNAVAILABLE' } });
    const r = (await client.callTool({ name: 'read_graph', arguments: {} })) as CallToolResult;
    expect(r.isError).toBe(true);
    // The agent reads that it was denied and why in one word; where the control plane is stays in the
    // gateway's log, for its operator.
    expect(textOf(r)).toBe('DEPENDENCY_UNAVAILABLE: control plane unreachable (ECONNREFUSED); denied to fail closed');
    await expect(client.listTools()).rejects.not.toThrow(new RegExp(`127\\.0\\.0\\.1|${port}`));
    expect(lines).toContainEqual(
      expect.objectContaining({ level: 40, failure: 'unreachable', msg: 'could not open a session: the control plane did not answer', err: expect.stringContaining(`at http://127.0.0.1:${port}: connect ECONNREFUSED`) }),
    );
  });

  it('unreachable control plane and an agent that keeps calling: one warn line per kind of failure at once, the rest counted (repeats), not one per call', async () => {
    const closed = createServer();
    await new Promise<void>((r) => closed.listen(0, '127.0.0.1', () => r()));
    const port = (closed.address() as { port: number }).port;
    await new Promise<void>((r) => closed.close(() => r()));
    const { log, lines } = capturedLog();
    const { client, gateway } = await connect(`http://127.0.0.1:${port}`, 1000, log);
    const calls = 20;
    for (let i = 0; i < calls; i++) {
      const r = (await client.callTool({ name: 'read_graph', arguments: {} })) as CallToolResult;
      expect(textOf(r)).toMatch(/^DEPENDENCY_UNAVAILABLE: control plane unreachable/);
      await expect(client.listTools()).rejects.toThrow(/DEPENDENCY_UNAVAILABLE/);
    }
    const of = (msg: string) => lines.filter((l) => l['msg'] === msg);
    const session = 'could not open a session: the control plane did not answer';
    const list = 'could not list tools: the control plane did not answer the tool report';
    expect(of(session)).toHaveLength(1);
    expect(of(session)[0]).toMatchObject({ level: 40, failure: 'unreachable', at_most_every_s: 30 });
    expect(of(list)).toHaveLength(1);
    // Stopping writes the counts still waiting, so every failure is accounted for.
    await gateway.close();
    expect(of(session)).toHaveLength(2);
    expect(of(session)[1]!['repeats']).toBe(calls - 1);
    expect(of(list)).toHaveLength(2);
    expect(of(list)[1]!['repeats']).toBe(calls - 1);
  });

  it('a 2xx answer that is not a decision ({"decision":"allow"} from a proxy or a wrong URL) denies; nothing runs', async () => {
    const answer = (url: string) => (url === '/v1/sessions' ? { session_id: '0192f0c1-0000-7000-8000-000000000002', state: 'active' } : { decision: 'allow' });
    await withImpostor(answer, async (url, asked) => {
      const { client } = await connect(url, 1000);
      const r = (await client.callTool({ name: 'create_entities', arguments: { entities: [{ name: 'Ada', entityType: 'person', observations: [] }] } })) as CallToolResult;
      expect(r.isError).toBe(true);
      expect(textOf(r)).toMatch(/^DEPENDENCY_UNAVAILABLE: the answer to \/v1\/decisions is not a decision \(code is missing\)/);
      expect(asked).toContain('/v1/decisions');
      expect(existsSync(memoryFile)).toBe(false);
    });
  });

  it('a 2xx answer to /sessions or /gateway/tools that is not the control plane\'s ({"ok":true} from a proxy) is DEPENDENCY_UNAVAILABLE, logged, not a TypeError', async () => {
    await withImpostor(() => ({ ok: true }), async (url, asked) => {
      const { log, lines } = capturedLog();
      const { client } = await connect(url, 1000, log);
      await expect(client.listTools()).rejects.toThrow(/DEPENDENCY_UNAVAILABLE: cannot list tools without the control plane \(the answer to \/v1\/gateway\/tools is not a tool report answer \(servers is not a list\)\)/);
      expect(lines).toContainEqual(expect.objectContaining({ level: 40, msg: 'could not list tools: the control plane gave no usable answer to the tool report', err: expect.stringContaining('servers is not a list') }));
      const r = (await client.callTool({ name: 'create_entities', arguments: { entities: [{ name: 'Ada', entityType: 'person', observations: [] }] } })) as CallToolResult;
      expect(r.isError).toBe(true);
      expect(textOf(r)).toMatch(/^DEPENDENCY_UNAVAILABLE: the answer to \/v1\/sessions is not a session \(session_id is missing\)/);
      // It answered, just not with a session: the log does not say it was silent.
      expect(lines).toContainEqual(expect.objectContaining({ level: 40, failure: 'unavailable', msg: 'could not open a session: the control plane gave no usable answer' }));
      // No decision was asked for with a session that was never opened.
      expect(asked).not.toContain('/v1/decisions');
      expect(existsSync(memoryFile)).toBe(false);
    });
  });

  it('a 2xx answer to the session close that is not the control plane\'s is not logged as a closed session', async () => {
    const answer = (url: string) => (url === '/v1/sessions' ? { session_id: '0192f0c1-0000-7000-8000-000000000004', state: 'active' } : { ok: true });
    await withImpostor(answer, async (url) => {
      const { log, lines } = capturedLog();
      const { client } = await connect(url, 1000, log);
      await client.callTool({ name: 'read_graph', arguments: {} });
      await client.close();
      await until(async () => lines.some((l) => String(l['msg']).startsWith('could not close the control-plane session')), 5_000, 'the close to be logged');
      expect(lines.some((l) => l['msg'] === 'control-plane session closed')).toBe(false);
      expect(lines).toContainEqual(expect.objectContaining({ level: 40, err: expect.stringContaining('is not a close answer (already_closed is missing)') }));
    });
  });

  it('a 2xx answer to /result that is not the result answer for this decision withholds the result', async () => {
    // Every answer but the last is a 2xx that does not say "recorded, action none|withhold_and_halt" for
    // the decision just reported: a proxy, a wrong URL, another decision, an action this gateway does not know.
    const answers: unknown[] = [
      { ok: true },
      { decision_id: 'another-decision', recorded: true, action: 'none', message: 'result recorded' },
      { decision_id: 'decision-1', recorded: false, action: 'none', message: 'not recorded' },
      { decision_id: 'decision-1', recorded: true, action: 'release', message: 'result recorded' },
      [],
      { decision_id: 'decision-1', recorded: true, action: 'none', message: 'result recorded' },
    ];
    let reported = 0;
    const answer = (url: string) => {
      if (url === '/v1/sessions') return { session_id: '0192f0c1-0000-7000-8000-000000000003', state: 'active' };
      if (url === '/v1/decisions') return { decision: 'allow', code: 'OK', decision_id: 'decision-1', message: 'allowed' };
      return answers[reported++];
    };
    await withImpostor(answer, async (url) => {
      const { client } = await connect(url, 1000);
      for (let i = 0; i < answers.length - 1; i++) {
        const r = (await client.callTool({ name: 'read_graph', arguments: {} })) as CallToolResult;
        expect(r.isError, `answer ${JSON.stringify(answers[i])}`).toBe(true);
        expect(textOf(r)).toMatch(/^DEPENDENCY_UNAVAILABLE: the answer to \/v1\/decisions\/decision-1\/result is not a result answer .*withheld\)$/);
        expect(textOf(r)).not.toContain('entities');
      }
      const released = (await client.callTool({ name: 'read_graph', arguments: {} })) as CallToolResult;
      expect(released.isError, textOf(released)).toBeFalsy();
      expect(textOf(released)).toContain('entities');
      expect(reported).toBe(answers.length);
    });
  });

  it('an unknown tool is refused without asking anyone', async () => {
    const { client } = await connect(`http://127.0.0.1:${silentPort}`, 300);
    expect(await rpcErrorOf(client.callTool({ name: 'no_such_tool', arguments: {} }))).toMatchObject({ code: -32602, data: { code: 'UNKNOWN_TOOL' } });
  });
});
