import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TestContext } from '../helpers/context.js';
import { until } from '../helpers/unleash.js';

// Replicas relay the Unleash webhook's turn-offs to each other over Redis. A message that cannot be read
// (another version, something else on the channel) changes nothing, and is said in the log, since a
// relayed turn-off may have been lost with it (the next poll still applies it).

const t = new TestContext();
let app: FastifyInstance;

beforeAll(async () => {
  await t.setup();
  app = await t.app();
});
afterAll(() => t.teardown());

describe('an unreadable flag override from another replica', () => {
  it('is ignored with a warning naming it, and flags stay as they were', async () => {
    const before = app.ctx.flags.isEnabled('mcp.enabled', {});
    const channel = app.ctx.redis.channel('flags:override');
    for (const message of ['not json', '{"op":"deny"}', 'null']) {
      await app.ctx.redis.redis.publish(channel, message);
    }
    const warned = () => t.logs.lines.filter((l) => l.includes('ignored a flag override from another replica'));
    await until(() => warned().length === 3, 5_000, 'the three warnings');
    expect(warned().map((l) => JSON.parse(l).message)).toEqual(['not json', '{"op":"deny"}', 'null']);
    expect(app.ctx.flags.isEnabled('mcp.enabled', {})).toBe(before);
  });
});
