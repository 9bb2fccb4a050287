import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bearer, TestContext } from '../helpers/context.js';
import { GatewayDriver } from '../helpers/gateway-client.js';
import { until } from '../helpers/unleash.js';

// RATE_LIMIT_WARNING is raised by the gate once per window of each counter (a minute, a day, a session's
// total). A busy agent passes 80% of a per-minute limit every minute, and one that opens a session per task
// passes it in every session: one alert row each time was ~1,440 rows a day per agent, kept
// RECORDS_RETENTION_DAYS, each streamed and sent to the webhook. One open alert per token and limit (and
// server, for a server's limit) is counted up in place instead (docs/alerts.md).

const POLICY = 'test/fixtures/decisions/limit-warnings.yaml';
const t = new TestContext();
let app: FastifyInstance;
let gw: GatewayDriver;

beforeAll(async () => {
  await t.setup();
  app = await t.app({ policyFile: POLICY });
  gw = await new GatewayDriver(t, app).init();
});
afterAll(() => t.teardown());

const read = (path: string) => ({ server: 'filesystem', tool: 'read_text_file', arguments: { path } });
const github = { server: 'github', tool: 'get_issue', arguments: { owner: 'o', repo: 'r', issue_number: 1 } };

interface AlertRow {
  id: string;
  token_id: string;
  session_id: string;
  server: string;
  numbers: Record<string, number>;
  details: Record<string, unknown>;
  message: string;
  acknowledged_at: Date | null;
}
const warnings = async (tokenId: string): Promise<AlertRow[]> =>
  (await t.pool().query<AlertRow>(`SELECT * FROM alerts WHERE kind = 'RATE_LIMIT_WARNING' AND token_id = $1 ORDER BY id`, [tokenId])).rows;

/** Windows the token's warnings stand for (an alert raised once per window, as before, counts one). */
const counted = (rows: AlertRow[]) => rows.reduce((n, a) => n + (a.numbers['windows'] ?? 1), 0);

/** Four calls in a new session: the 4th is 80% of its 5 calls a minute (the gate's alert for that window). */
async function busySession(tok: { raw: string }, call: Record<string, unknown> = read('a.md')): Promise<string> {
  const sid = (await gw.session(tok.raw)).session_id;
  for (let i = 0; i < 4; i++) expect((await gw.decide(tok.raw, { ...call, session_id: sid })).code).toBe('OK');
  return sid;
}

describe('RATE_LIMIT_WARNING: one open alert per token and limit, counted in place', () => {
  it('three sessions of one token passing 80% of their per-minute limit leave one alert that counts three', async () => {
    const tok = await gw.token('rw');
    const sessions = [await busySession(tok), await busySession(tok), await busySession(tok)];
    await until(async () => counted(await warnings(tok.id)) === 3, 5_000, 'the three windows');
    const rows = await warnings(tok.id);
    expect(rows).toHaveLength(1);
    const [alert] = rows;
    expect(alert).toMatchObject({ session_id: sessions[0], numbers: { used: 4, max: 5, percent: 80, windows: 3 }, acknowledged_at: null });
    expect(alert!.details).toMatchObject({ limit: 'session_calls_per_minute', last_session_id: sessions[2] });
    expect(alert!.message).toContain('3 windows');
    // Another token's warning is its own.
    const other = await gw.token('rw');
    await busySession(other);
    await until(async () => (await warnings(other.id)).length === 1, 5_000, "the other token's warning");
    expect((await warnings(tok.id))[0]!.numbers['windows']).toBe(3);
  });

  it('once acknowledged, the next window raises a new alert', async () => {
    const tok = await gw.token('rw');
    await busySession(tok);
    await until(async () => (await warnings(tok.id)).length === 1, 5_000, 'the first warning');
    const [first] = await warnings(tok.id);
    const ack = await app.inject({ method: 'POST', url: `/v1/alerts/${first!.id}/ack`, headers: bearer(gw.owner), payload: { note: 'seen' } });
    expect(ack.statusCode, ack.body).toBe(200);
    await busySession(tok);
    await until(async () => (await warnings(tok.id)).length === 2, 5_000, 'a new warning after the acknowledgement');
    const rows = await warnings(tok.id);
    expect(rows[1]).toMatchObject({ numbers: { windows: 1 }, acknowledged_at: null });
  });

  it("a server's limit is counted apart from the session's", async () => {
    const tok = await gw.token('rw', { scopes: ['storage:read', 'vcs:read'] });
    // github: 4 calls are 80% of its 5 in the session and of the session's 5 a minute: two limits, two alerts.
    await busySession(tok, github);
    await busySession(tok, github);
    await until(async () => counted(await warnings(tok.id)) === 4, 5_000, 'both limits counted twice');
    const rows = await warnings(tok.id);
    expect(rows.map((a) => [a.details['limit'], a.server, a.numbers['windows']]).sort()).toEqual([
      ['server_calls', 'github', 2],
      ['session_calls_per_minute', 'github', 2],
    ]);
  });
});
