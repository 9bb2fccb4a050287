import type { FastifyRequest } from 'fastify';
import { describe, expect, it } from 'vitest';
import type { AdminAction } from '../../src/audit/rows.js';
import { RefusedCredentials } from '../../src/http/auth.js';
import { refused } from '../../src/tokens/authenticator.js';

// RefusedCredentials (src/http/auth.ts) keeps the audit trail from filling with one credential's refusals
// (one AUTH_FAILURE row per credential a minute) without ever hiding a credential it has not seen lately.

const req = { method: 'POST', url: '/v1/decisions', routeOptions: { url: '/v1/decisions' }, ip: '127.0.0.1' } as unknown as FastifyRequest;
const quiet = { info() {}, warn() {} };

function setup() {
  const rows: AdminAction[] = [];
  let t = 1_000_000;
  const refusedCredentials = new RefusedCredentials({ recordAdmin: async (a) => void rows.push(a) }, quiet, () => t);
  const present = (id: string) => refusedCredentials.note(req, refused({ reason: 'revoked', kind: 'agent', id }));
  const advance = (ms: number) => {
    t += ms;
  };
  return { rows, present, advance };
}

describe('RefusedCredentials', () => {
  it('one row per credential a minute: a second use within the minute adds none, one after it adds one', () => {
    const { rows, present, advance } = setup();
    present('a');
    advance(59_000);
    present('a');
    expect(rows.map((r) => r.target)).toEqual(['agent_token:a']);
    advance(1_001);
    present('a');
    expect(rows.map((r) => r.target)).toEqual(['agent_token:a', 'agent_token:a']);
  });

  it('more credentials in a minute than it tracks: each new one still gets its row (the oldest are forgotten first)', () => {
    const { rows, present } = setup();
    for (let i = 0; i < 10_000; i++) present(`old-${i}`);
    expect(rows).toHaveLength(10_000);
    present('new');
    expect(rows.at(-1)?.target).toBe('agent_token:new');
    // The most recently seen are still remembered: no second row for them.
    present('old-9999');
    expect(rows).toHaveLength(10_001);
  });
});
