import Fastify from 'fastify';
import { describe, expect, it } from 'vitest';
import { installErrorHandler } from '../../src/http/error-handler.js';

// The error handler every route shares: what an unexpected error and a stray client error become.

async function appThrowing(err: Error) {
  const lines: string[] = [];
  const app = Fastify({ logger: { level: 'error', stream: { write: (l: string) => lines.push(l) } } });
  installErrorHandler(app);
  app.get('/boom', async () => {
    throw err;
  });
  await app.ready();
  return { app, lines };
}

describe('the shared error handler', () => {
  it('answers a bug with 500 INTERNAL naming the request id, logs it, and leaks nothing of the error', async () => {
    const { app, lines } = await appThrowing(new Error('secret connection string postgres://u:pw@db/x'));
    const res = await app.inject({ url: '/boom' });
    expect(res.statusCode).toBe(500);
    const body = res.json();
    expect(body.error.code).toBe('INTERNAL');
    expect(body.error.message).toMatch(/^Internal error \(request \S+\)\.$/);
    expect(res.body).not.toContain('postgres://');
    expect(lines.some((l) => l.includes('unhandled error'))).toBe(true);
    await app.close();
  });

  it.each([
    [404, 'NOT_FOUND'],
    [409, 'CONFLICT'],
    [401, 'UNAUTHENTICATED'],
  ])('gives a stray client error of status %i its code from the table (%s)', async (status, code) => {
    const { app } = await appThrowing(Object.assign(new Error('nope'), { statusCode: status }));
    const res = await app.inject({ url: '/boom' });
    expect(res.statusCode).toBe(status);
    expect(res.json().error.code).toBe(code);
    await app.close();
  });

  it('answers a client error whose status the table has no code for as 400 INVALID_REQUEST, never INVALID_REQUEST with another status', async () => {
    const { app } = await appThrowing(Object.assign(new Error('teapot'), { statusCode: 418 }));
    const res = await app.inject({ url: '/boom' });
    expect(res.statusCode).toBe(400);
    expect(res.json().error).toMatchObject({ code: 'INVALID_REQUEST', message: 'teapot' });
    await app.close();
  });
});
