import { connect } from 'node:net';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TestContext } from '../helpers/context.js';
import { GatewayDriver } from '../helpers/gateway-client.js';

// A body over BODY_LIMIT_BYTES is answered 413. Clients such as Python's urllib write the whole body
// before they read: answered and closed while they were still uploading, they saw a broken pipe instead
// of the 413, and a gateway took a too-big call for "control plane unreachable".

const POLICY = 'test/fixtures/decisions/policy.yaml';
const LIMIT = 1_048_576;
const t = new TestContext();
let app: FastifyInstance;
let gw: GatewayDriver;
let port: number;

beforeAll(async () => {
  await t.setup();
  app = await t.app({ policyFile: POLICY, bodyLimitBytes: LIMIT });
  gw = await new GatewayDriver(t, app).init();
  await app.listen({ port: 0, host: '127.0.0.1' });
  port = (app.server.address() as { port: number }).port;
});
afterAll(async () => {
  await t.teardown();
});

interface Sent {
  /** The socket failed while the body was still being written (EPIPE, ECONNRESET). */
  writeError?: string;
  response: string;
}

/**
 * Writes the request the way a client that reads only after sending does: the head, then the body in
 * 64 KiB pieces at the pace of a network (a pause between pieces), and only then reads the answer.
 */
function postWholeBody(headers: Record<string, string>, body: Buffer, opts: { chunked?: boolean } = {}): Promise<Sent> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    socket.pause();
    const head = [`POST /v1/decisions HTTP/1.1`, `Host: 127.0.0.1:${port}`, 'Content-Type: application/json', ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`)];
    head.push(opts.chunked ? 'Transfer-Encoding: chunked' : `Content-Length: ${body.length}`);
    const pieces: Buffer[] = [Buffer.from(`${head.join('\r\n')}\r\n\r\n`)];
    for (let at = 0; at < body.length; at += 65_536) {
      const piece = body.subarray(at, at + 65_536);
      pieces.push(opts.chunked ? Buffer.concat([Buffer.from(`${piece.length.toString(16)}\r\n`), piece, Buffer.from('\r\n')]) : piece);
    }
    if (opts.chunked) pieces.push(Buffer.from('0\r\n\r\n'));
    let response = '';
    socket.on('error', (err: NodeJS.ErrnoException) => resolve({ writeError: err.code ?? err.message, response }));
    const read = () => {
      socket.on('data', (d: Buffer) => {
        response += d.toString('utf8');
      });
      socket.on('end', () => resolve({ response }));
      socket.resume();
    };
    const next = () => {
      const piece = pieces.shift();
      if (!piece) return read();
      socket.write(piece, (err) => {
        if (!err) setTimeout(next, 1);
      });
    };
    next();
  });
}

const decisionOf = (size: number, sessionId: string) =>
  Buffer.from(JSON.stringify({ server: 'filesystem', tool: 'write_file', arguments: { path: 'a.md', content: 'x'.repeat(size) }, session_id: sessionId }));

describe('a body over BODY_LIMIT_BYTES', () => {
  for (const chunked of [false, true]) {
    it(`reaches a client that writes all of it before reading (2 MiB over a 1 MiB limit${chunked ? ', chunked' : ''}) as 413 PAYLOAD_TOO_LARGE`, async () => {
      const tok = await gw.token('rw');
      const s = await gw.session(tok.raw);
      const sent = await postWholeBody(gw.headers(tok.raw), decisionOf(2 * LIMIT, s.session_id), { chunked });
      expect(sent.writeError).toBeUndefined();
      expect(sent.response.split('\r\n')[0]).toBe('HTTP/1.1 413 Payload Too Large');
      const body = JSON.parse(sent.response.slice(sent.response.indexOf('\r\n\r\n') + 4));
      expect(body.error).toMatchObject({ code: 'PAYLOAD_TOO_LARGE', details: [{ field: 'body', problem: 'too large' }] });
      // Nothing of it was decided: the session has no call.
      expect((await gw.decide(tok.raw, { server: 'filesystem', tool: 'read_text_file', arguments: { path: 'a.md' }, session_id: s.session_id })).code).toBe('OK');
    });
  }

  it('declared larger than 4× the limit is answered at once, without reading it', async () => {
    const tok = await gw.token('rw');
    const answer = await new Promise<string>((resolve, reject) => {
      const socket = connect(port, '127.0.0.1');
      let response = '';
      socket.on('data', (d: Buffer) => {
        response += d.toString('utf8');
      });
      socket.on('close', () => resolve(response));
      socket.on('error', reject);
      const headers = Object.entries(gw.headers(tok.raw)).map(([k, v]) => `${k}: ${v}\r\n`);
      socket.write(`POST /v1/decisions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n${headers.join('')}Content-Length: ${64 * LIMIT}\r\n\r\n{"server":`);
    });
    expect(answer.split('\r\n')[0]).toBe('HTTP/1.1 413 Payload Too Large');
  });

  /** Writes raw bytes and reads until the server closes: for requests Node's HTTP parser refuses. */
  const raw = (bytes: string) =>
    new Promise<{ status: string; body: { error?: Record<string, unknown> } }>((resolve, reject) => {
      const socket = connect(port, '127.0.0.1');
      let response = '';
      socket.on('data', (d: Buffer) => {
        response += d.toString('utf8');
      });
      socket.on('close', () => resolve({ status: response.split('\r\n')[0] ?? '', body: JSON.parse(response.slice(response.indexOf('\r\n\r\n') + 4) || '{}') }));
      socket.on('error', reject);
      socket.write(bytes);
    });

  it('headers over 16 KB → 431 HEADERS_TOO_LARGE in the one error body (it was Fastify\'s default body, no code)', async () => {
    const res = await raw(`GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`);
    expect(res.status).toBe('HTTP/1.1 431 Request Header Fields Too Large');
    expect(res.body.error).toEqual({
      code: 'HEADERS_TOO_LARGE',
      message: 'headers: are larger than 16 KB (request line and headers together)',
      details: [{ field: 'headers', problem: 'are larger than 16 KB (request line and headers together)' }],
    });
  });

  it('a request the HTTP parser refuses (Content-Length with Transfer-Encoding, a bad chunk size) → 400 INVALID_REQUEST naming the request', async () => {
    for (const bytes of [
      'POST /v1/decisions HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n',
      'POST /v1/decisions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n',
    ]) {
      const res = await raw(bytes);
      expect(res.status).toBe('HTTP/1.1 400 Bad Request');
      expect(res.body.error).toMatchObject({ code: 'INVALID_REQUEST', details: [{ field: 'request', problem: expect.stringMatching(/^is not a valid HTTP\/1\.1 request \(HPE_/) }] });
    }
  });
});
