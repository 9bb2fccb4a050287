import { Writable } from 'node:stream';
import type { FastifyBaseLogger } from 'fastify';
import { type Bindings, type ChildLoggerOptions, type Logger, pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { lazyChildLogger } from '../../src/http/request-logger.js';
import { loggerOptions } from '../../src/log.js';

// The per-request logger builds pino's child only when it writes, and writes exactly what the child would.

function capture() {
  const lines: Record<string, unknown>[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const l of chunk.toString('utf8').split('\n').filter(Boolean)) lines.push(JSON.parse(l) as Record<string, unknown>);
      cb();
    },
  });
  const parent = pino(loggerOptions('info'), stream);
  let children = 0;
  // Children inherit this property (pino children are prototype-linked): count only the parent's own calls.
  const original = parent.child as unknown as (this: unknown, b: Bindings, o?: ChildLoggerOptions) => Logger;
  parent.child = function (this: unknown, b: Bindings, o?: ChildLoggerOptions) {
    if (this === parent) children++;
    return original.call(this, b, o);
  } as unknown as typeof parent.child;
  return { parent, lines, children: () => children };
}

describe('lazyChildLogger', () => {
  it('builds no child for lines below the level, and one child for any number of lines above it', () => {
    const c = capture();
    const log = lazyChildLogger(c.parent as unknown as FastifyBaseLogger, { reqId: 'req-1' }, {});
    log.debug({ a: 1 }, 'not written');
    log.trace('not written either');
    expect(c.children()).toBe(0);
    log.info({ decision: 'deny' }, 'decision denied');
    log.error(new Error('boom'), 'failed');
    expect(c.children()).toBe(1);
    expect(c.lines).toHaveLength(2);
    expect(c.lines[0]).toMatchObject({ reqId: 'req-1', decision: 'deny', msg: 'decision denied', level: 30 });
    expect(c.lines[1]).toMatchObject({ reqId: 'req-1', msg: 'failed', level: 50 });
    expect((c.lines[1]!['err'] as { message: string }).message).toBe('boom');
  });

  it('follows the level of its parent until it has a child, and applies redaction', () => {
    const c = capture();
    const log = lazyChildLogger(c.parent as unknown as FastifyBaseLogger, { reqId: 'req-2' }, {});
    expect(log.level).toBe('info');
    c.parent.level = 'debug';
    log.debug({ token: 'mcp_rw_secretsecret' }, 'now written');
    expect(c.lines[0]).toMatchObject({ reqId: 'req-2', token: '[redacted]', msg: 'now written' });
    const sub = log.child({ step: 'gate' });
    sub.info('from a grandchild');
    expect(c.lines[1]).toMatchObject({ reqId: 'req-2', step: 'gate' });
  });

  it('a route with its own log level gets a real child at once', () => {
    const c = capture();
    const log = lazyChildLogger(c.parent as unknown as FastifyBaseLogger, { reqId: 'req-3' }, { level: 'error' });
    expect(c.children()).toBe(1);
    log.info('below the route level');
    log.error('written');
    expect(c.lines.map((l) => l['msg'])).toEqual(['written']);
  });
});
