import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { type CallToolResult, CallToolResultSchema, LoggingMessageNotificationSchema, ProgressNotificationSchema, ReadResourceResultSchema } from '@modelcontextprotocol/sdk/types.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bearer } from '../helpers/context.js';
import { until } from '../helpers/unleash.js';
import { GatewayHarness, textOf } from './gateway-harness.js';

// SDK Client → gateway → real server-filesystem, with the real control plane: a move_file the policy
// says needs a human, decided through the admin API while the gateway waits (or answered at once).

const h = new GatewayHarness();
const POLICY = `approvals:
  rules:
    - name: moves-need-a-human
      servers: [filesystem]
      tools: [move_file]
    - name: graph-reads-need-a-human
      servers: [memory]
      tools: [resources/read]
`;

beforeAll(async () => {
  await h.start({ policyExtra: POLICY });
}, 120_000);
afterAll(() => h.stop());

interface QueueRow {
  id: string;
  state: string;
  tool: string;
  arguments: Record<string, unknown>;
}

async function queue(state?: string): Promise<QueueRow[]> {
  const res = await h.app.inject({ method: 'GET', url: `/v1/approvals?kind=call${state ? `&state=${state}` : ''}`, headers: bearer(h.owner) });
  expect(res.statusCode).toBe(200);
  return res.json().approvals;
}

async function pendingFor(source: string, timeoutMs = 15_000): Promise<QueueRow> {
  const t0 = Date.now();
  for (;;) {
    const hit = (await queue('pending')).find((a) => a.arguments['source'] === source);
    if (hit) return hit;
    if (Date.now() - t0 > timeoutMs) throw new Error(`no pending approval for ${source}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function decide(id: string, verb: 'approve' | 'reject', reason: string) {
  const res = await h.app.inject({ method: 'POST', url: `/v1/approvals/${id}/${verb}`, headers: bearer(h.owner), payload: { reason } });
  expect(res.statusCode).toBe(200);
}

async function waitingGateway(killswitch: Record<string, unknown>, opts: { memory?: boolean } = {}): Promise<{ client: Client; token: string }> {
  const token = await h.token('rw');
  const gateway = await h.gateway({ agentToken: token, killswitch, ...opts });
  return { client: await h.client(gateway, token), token };
}

describe('the gateway waits for a human approval', () => {
  it('move_file waits; an operator approves through the admin API; the call then runs once', async () => {
    const { client } = await waitingGateway({ approvals: { mode: 'wait', timeoutSeconds: 60, pollSeconds: 1 } });
    const source = join(h.dir, 'draft.txt');
    const destination = join(h.dir, 'final.txt');
    writeFileSync(source, 'approved content\n');

    const progress: string[] = [];
    const pending = client.callTool({ name: 'move_file', arguments: { source, destination } }, CallToolResultSchema, {
      onprogress: (p) => progress.push(p.message ?? ''),
      timeout: 90_000,
    }) as Promise<CallToolResult>;
    const request = await pendingFor(source);
    expect(request.tool).toBe('move_file');
    // Waiting, not run: the file has not moved while the operator decides.
    await new Promise((r) => setTimeout(r, 1500));
    expect(existsSync(source)).toBe(true);
    expect(progress.some((m) => m.includes(request.id) && /waits up to 60 s/.test(m))).toBe(true);

    await decide(request.id, 'approve', 'reviewed the move');
    const result = await pending;
    expect(result.isError).toBeFalsy();
    expect(textOf(result)).toMatch(/Successfully moved/);
    expect(existsSync(source)).toBe(false);
    expect(readFileSync(destination, 'utf8')).toBe('approved content\n');

    // Used by exactly one call; the operator's queue shows it so.
    const after = (await queue()).filter((a) => a.arguments['source'] === source);
    expect(after.map((a) => a.state)).toEqual(['used']);
    const intents = await h.auditRows(
      "kind = 'INTENT' AND tool = 'move_file' AND arguments->>'source' = $1",
      [source],
      (rows) => rows.some((r) => r['decision'] === 'allow'),
    );
    expect(intents.filter((r) => r['decision'] === 'allow')).toHaveLength(1);
    expect(intents.filter((r) => r['decision'] === 'deny').map((r) => r['code'])).toEqual(['APPROVAL_REQUIRED']);
  }, 60_000);

  it('a client without a progress token gets log messages while it waits; a rejection returns isError with the reason', async () => {
    const { client } = await waitingGateway({ approvals: { mode: 'wait', timeoutSeconds: 60, pollSeconds: 1 } });
    const logs: string[] = [];
    client.setNotificationHandler(LoggingMessageNotificationSchema, (n) => {
      logs.push(String(n.params.data));
    });
    const source = join(h.dir, 'keep.txt');
    writeFileSync(source, 'stay\n');
    const pending = client.callTool({ name: 'move_file', arguments: { source, destination: join(h.dir, 'gone.txt') } }) as Promise<CallToolResult>;
    const request = await pendingFor(source);
    await decide(request.id, 'reject', 'not this file');
    const result = await pending;
    expect(result.isError).toBe(true);
    expect(textOf(result)).toMatch(/^APPROVAL_REJECTED: .*not this file/);
    expect(result._meta?.['killswitch/decision']).toMatchObject({ outcome: 'denied', code: 'APPROVAL_REJECTED', approval_id: request.id });
    expect(existsSync(source)).toBe(true);
    expect(logs.some((m) => m.includes(request.id))).toBe(true);
  }, 60_000);

  it('a client that set its log level above info (logging/setLevel warning) gets no info log messages while it waits', async () => {
    const { client } = await waitingGateway({ approvals: { mode: 'wait', timeoutSeconds: 60, pollSeconds: 1 } });
    const logs: Array<{ level: string; data: unknown }> = [];
    client.setNotificationHandler(LoggingMessageNotificationSchema, (n) => {
      logs.push({ level: n.params.level, data: n.params.data });
    });
    await client.setLoggingLevel('warning');
    const source = join(h.dir, 'quiet.txt');
    writeFileSync(source, 'stay\n');
    const pending = client.callTool({ name: 'move_file', arguments: { source, destination: join(h.dir, 'quiet-gone.txt') } }) as Promise<CallToolResult>;
    const request = await pendingFor(source);
    await decide(request.id, 'reject', 'too noisy');
    const result = await pending;
    expect(textOf(result)).toMatch(/^APPROVAL_REJECTED: .*too noisy/);
    expect(logs).toEqual([]);
  }, 60_000);

  it('no decision within the timeout: isError APPROVAL_REQUIRED naming the request, nothing ran', async () => {
    const { client } = await waitingGateway({ approvals: { mode: 'wait', timeoutSeconds: 2, pollSeconds: 1 } });
    const source = join(h.dir, 'slow.txt');
    writeFileSync(source, 'slow\n');
    const result = (await client.callTool({ name: 'move_file', arguments: { source, destination: join(h.dir, 'slow2.txt') } })) as CallToolResult;
    expect(result.isError).toBe(true);
    // Still pending (nobody decided), and the answer is the one of a wait that ran out, not of a call that
    // returned at once (APPROVAL_REQUIRED with no wait, as in 'return at once' below).
    const request = await pendingFor(source);
    expect(textOf(result)).toContain(`no operator decided approval ${request.id} within the gateway's 2 s`);
    expect(existsSync(source)).toBe(true);
  }, 60_000);
});

describe('a resources/read that needs a human', () => {
  it('waits as a tool call does and tells the agent by progress, with the agent\'s own (string) progress token; approved, the read runs', async () => {
    const { client } = await waitingGateway({ approvals: { mode: 'wait', timeoutSeconds: 60, pollSeconds: 1 } }, { memory: true });
    const graph = (await client.listResources()).resources.find((r) => r.uri.startsWith('memory://'));
    expect(graph).toBeDefined();
    // The SDK client makes numeric tokens (its request ids; the tool-call test above); MCP allows strings
    // too. Its own progress handler knows only its tokens, so this one is read here.
    const progress: Array<{ progressToken: unknown; progress: number; message?: string | undefined }> = [];
    client.setNotificationHandler(ProgressNotificationSchema, (n) => {
      progress.push(n.params);
    });
    const pending = client.request({ method: 'resources/read', params: { uri: graph?.uri ?? '', _meta: { progressToken: 'graph-read-1' } } }, ReadResourceResultSchema, { timeout: 90_000 });
    let request: QueueRow | undefined;
    for (let i = 0; i < 150 && !request; i++) {
      request = (await queue('pending')).find((a) => a.tool === 'resources/read');
      if (!request) await new Promise((r) => setTimeout(r, 100));
    }
    expect(request?.arguments).toEqual({ uri: graph?.uri });
    await until(() => progress.length > 0, 5000, 'a progress notification');
    expect(progress[0]).toMatchObject({ progressToken: 'graph-read-1', progress: 1, message: expect.stringContaining(request?.id ?? '?') });

    await decide(request?.id ?? '', 'approve', 'reviewed the read');
    const read = await pending;
    expect(read.contents.length).toBeGreaterThan(0);
    expect(progress.every((p) => p.progressToken === 'graph-read-1')).toBe(true);
    expect(progress.map((p) => p.progress)).toEqual(progress.map((_, i) => i + 1));
  }, 60_000);
});

describe('production grants through the same queue', () => {
  it('a production token waits for its grant; the operator approves it with expires_in; the call then runs', async () => {
    const res = await h.app.inject({
      method: 'POST',
      url: '/v1/keys',
      headers: bearer(h.owner),
      payload: { type: 'ro', role: 'code_agent', project_id: 'e2e', environment: 'production', description: 'gateway e2e production' },
    });
    expect(res.statusCode).toBe(201);
    const token = res.json().token as string;
    const gateway = await h.gateway({ agentToken: token, killswitch: { approvals: { mode: 'wait', timeoutSeconds: 60, pollSeconds: 1 } } });
    const client = await h.client(gateway, token);
    writeFileSync(join(h.dir, 'prod.log'), 'production log line\n');
    const pending = client.callTool({ name: 'read_text_file', arguments: { path: join(h.dir, 'prod.log') } }) as Promise<CallToolResult>;
    let request: { id: string; kind: string } | undefined;
    for (let i = 0; i < 150 && !request; i++) {
      const list = await h.app.inject({ url: '/v1/approvals?kind=production_grant&state=pending', headers: bearer(h.owner) });
      request = list.json().approvals[0];
      if (!request) await new Promise((r) => setTimeout(r, 100));
    }
    expect(request?.kind).toBe('production_grant');
    const approved = await h.app.inject({ method: 'POST', url: `/v1/approvals/${request!.id}/approve`, headers: bearer(h.owner), payload: { reason: 'INC-9 read the log', expires_in: 300 } });
    expect(approved.statusCode).toBe(200);
    const result = await pending;
    expect(result.isError).toBeFalsy();
    expect(textOf(result)).toContain('production log line');
  }, 60_000);
});

describe('return at once', () => {
  it('the default mode answers APPROVAL_REQUIRED with the approval id at once', async () => {
    const { client } = await waitingGateway({});
    const source = join(h.dir, 'quick.txt');
    writeFileSync(source, 'quick\n');
    // A gateway that waited would wait the default 300 s, far beyond this test's 60 s: the answer comes
    // while the approval is still pending, and is not the one of a wait that ran out.
    const result = (await client.callTool({ name: 'move_file', arguments: { source, destination: join(h.dir, 'quick2.txt') } })) as CallToolResult;
    expect(result.isError).toBe(true);
    const request = await pendingFor(source);
    expect(textOf(result)).toMatch(/^APPROVAL_REQUIRED: /);
    expect(textOf(result)).not.toContain('no operator decided');
    expect(textOf(result)).toContain(request.id);
    expect(result._meta?.['killswitch/decision']).toMatchObject({ code: 'APPROVAL_REQUIRED', approval_id: request.id });
    expect(existsSync(source)).toBe(true);
  }, 60_000);
});
