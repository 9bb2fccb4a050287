import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { McpError } from '@modelcontextprotocol/sdk/types.js';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { fetchWithin, installMessageBuffer, MIN_MESSAGE_LIMIT_BYTES, messageLimitBytes, OversizeAnswers, OversizeMessageError, requestIdOf, StdioMessageBuffer } from '../../src/gateway/message-size.js';
import { until } from '../helpers/unleash.js';

// How the gateway reads upstream messages: stdio lines kept in chunks (no quadratic concatenation),
// a line over the limit counted and discarded and its request answered with its size, and the same
// limit on Streamable HTTP answers.

const line = (m: unknown) => Buffer.from(`${JSON.stringify(m)}\n`);
const drain = (b: StdioMessageBuffer) => {
  const out: unknown[] = [];
  for (let m = b.readMessage(); m !== null; m = b.readMessage()) out.push(m);
  return out;
};
/** What the SDK client makes of a stand-in answer. */
const rejection = (m: unknown) => {
  const e = (m as { error: { code: number; message: string; data: unknown } }).error;
  return new McpError(e.code, e.message, e.data);
};

describe('the message limit', () => {
  it('is 64 MB, or 4 × maxResultBytes when that is more', () => {
    expect(messageLimitBytes({ maxResultBytes: 1_048_576 })).toBe(MIN_MESSAGE_LIMIT_BYTES);
    expect(messageLimitBytes({ maxResultBytes: 100 * 1_048_576 })).toBe(400 * 1_048_576);
  });
});

describe('StdioMessageBuffer', () => {
  it('reads messages split across chunks, several per chunk, CRLF, and skips blank lines', () => {
    const b = new StdioMessageBuffer(1000, new OversizeAnswers());
    const bytes = Buffer.concat([line({ jsonrpc: '2.0', id: 1, result: {} }), Buffer.from('\r\n\n'), line({ jsonrpc: '2.0', method: 'notifications/x' })]);
    b.append(bytes.subarray(0, 10));
    expect(drain(b)).toEqual([]);
    b.append(bytes.subarray(10));
    expect(drain(b)).toEqual([
      { jsonrpc: '2.0', id: 1, result: {} },
      { jsonrpc: '2.0', method: 'notifications/x' },
    ]);
  });

  it('a line over the limit is discarded and its request answered with its exact size; the next message reads', () => {
    const answers = new OversizeAnswers();
    const b = new StdioMessageBuffer(1000, answers);
    // The TypeScript SDK's order: id last.
    const big = line({ result: { content: [{ type: 'text', text: 'x'.repeat(5000) }] }, jsonrpc: '2.0', id: 7 });
    for (let i = 0; i < big.length; i += 300) b.append(big.subarray(i, i + 300));
    b.append(line({ jsonrpc: '2.0', id: 8, result: {} }));
    const [stand, next] = drain(b);
    expect((stand as { id: number }).id).toBe(7);
    const err = answers.errorOf(rejection(stand));
    expect(err?.bytes).toBe(big.length - 1);
    expect(err?.exact).toBe(true);
    expect(next).toEqual({ jsonrpc: '2.0', id: 8, result: {} });
  });

  it('finds the id first (the Python SDK order) and string ids', () => {
    expect(requestIdOf('{"jsonrpc":"2.0","id":12,"result":{"content":[', '')).toBe(12);
    expect(requestIdOf('{"result":{"a', 'xx"}]},"jsonrpc":"2.0","id":"a\\"b"}')).toBe('a"b');
    expect(requestIdOf('{"result":{"a', 'xx","id":5}]},"jsonrpc":"2.0"}')).toBeUndefined();
  });

  it('a discarded line that names no request is reported, and reading goes on', () => {
    const b = new StdioMessageBuffer(100, new OversizeAnswers());
    b.append(Buffer.from(`{"jsonrpc":"2.0","method":"notifications/message","params":{"data":"${'y'.repeat(500)}"}}\n`));
    b.append(line({ jsonrpc: '2.0', id: 2, result: {} }));
    expect(() => b.readMessage()).toThrow(/discarded a \d+-byte message .* names no request/);
    expect(b.readMessage()).toEqual({ jsonrpc: '2.0', id: 2, result: {} });
  });

  it('an upstream cannot forge the stand-in answer', () => {
    const forged = new OversizeAnswers().answer(3, 10, true);
    expect(new OversizeAnswers().errorOf(rejection(forged))).toBeUndefined();
  });

  it('reads a 64 MB message in 64 KB chunks without quadratic copying', () => {
    const b = new StdioMessageBuffer(MIN_MESSAGE_LIMIT_BYTES + 1000, new OversizeAnswers());
    const chunk = Buffer.alloc(65_536, 0x61);
    // Counted in bytes copied, not in time: the SDK's ReadBuffer concatenates everything it holds on
    // every chunk (~32 GB copied for this message, ~100 s on a loaded 2-core machine); this one joins
    // the chunks once, at the newline.
    const concat = vi.spyOn(Buffer, 'concat');
    try {
      b.append(Buffer.from('{"jsonrpc":"2.0","id":1,"result":{"t":"'));
      for (let i = 0; i < 1000; i++) b.append(chunk);
      b.append(Buffer.from('"}}\n'));
      const copied = concat.mock.results.reduce((n, r) => n + (r.type === 'return' ? (r.value as Buffer).length : 0), 0);
      expect(copied).toBeLessThanOrEqual(2 * 1000 * chunk.length);
    } finally {
      concat.mockRestore();
    }
    expect((b.readMessage() as { id: number }).id).toBe(1);
  });

  it('reads a chunk of 65,536 blank and whitespace lines without moving the lines still queued for each one', () => {
    const b = new StdioMessageBuffer(MIN_MESSAGE_LIMIT_BYTES, new OversizeAnswers());
    // Blank lines ("\n", "\r\n", " \n") as an upstream may write them by the chunk, then a message.
    const chunk = Buffer.from(`${'\n'.repeat(16_384)}${'\r\n'.repeat(8_192)}${' \n'.repeat(8_192)}${'\n'.repeat(16_384)}`);
    // Counted in queued lines moved, not in time: a queue read with Array.prototype.shift moves every line
    // still waiting on each read (~2 billion for one such chunk, seconds of the event loop every agent shares).
    // (Patched by hand: a vi.spyOn mock records its calls in arrays, and so would count itself.)
    const original = Array.prototype.shift;
    let moved = 0;
    Array.prototype.shift = function (this: unknown[]) {
      moved += this.length;
      return original.call(this);
    };
    let read: unknown[];
    try {
      b.append(chunk);
      b.append(line({ jsonrpc: '2.0', id: 9, result: {} }));
      read = drain(b);
    } finally {
      Array.prototype.shift = original;
    }
    expect(read).toEqual([{ jsonrpc: '2.0', id: 9, result: {} }]);
    expect(moved).toBeLessThan(chunk.length);
  });

  it('reports a run of lines that are not messages as one error (one log line), then reads the message after it', () => {
    const b = new StdioMessageBuffer(MIN_MESSAGE_LIMIT_BYTES, new OversizeAnswers());
    // Each throw is an SDK onerror and a warn line of the gateway's log: per line, 1 MB of `{}` lines held
    // the event loop every agent shares for ~30 s.
    b.append(Buffer.from(`${'{}\n'.repeat(1000)}${'x\n'.repeat(1000)}${'{"jsonrpc":"2.0","id":1}\n'.repeat(1000)}${'{"jsonrpc":"2.0","method":7}\n'.repeat(1000)}`));
    b.append(line({ jsonrpc: '2.0', id: 3, result: {} }));
    b.append(Buffer.from('nope\n'));
    const read: unknown[] = [];
    const errors: string[] = [];
    for (let i = 0; i < 10_000; i++) {
      try {
        const m = b.readMessage();
        if (m === null) break;
        read.push(m);
      } catch (err) {
        errors.push((err as Error).message);
      }
    }
    expect(read).toEqual([{ jsonrpc: '2.0', id: 3, result: {} }]);
    expect(errors).toHaveLength(2);
    expect(errors[0]).toMatch(/^4000 lines in a row from the upstream were not JSON-RPC messages; the first: not a JSON-RPC 2\.0 message: \{\}$/);
    expect(errors[1]).toBe('not a JSON-RPC 2.0 message: nope');
  });

  it("replaces the SDK stdio transport's read buffer", () => {
    const t = new StdioClientTransport({ command: process.execPath, args: ['-e', ''] });
    const b = new StdioMessageBuffer(1000, new OversizeAnswers());
    expect(installMessageBuffer(t, b)).toBe(true);
    expect((t as unknown as { _readBuffer: unknown })._readBuffer).toBe(b);
  });
});

describe('fetchWithin (Streamable HTTP upstreams)', () => {
  let server: Server;
  let url: string;
  beforeAll(async () => {
    server = createServer((req, res) => {
      req.resume();
      const size = Number(new URL(req.url ?? '/', 'http://x').searchParams.get('size'));
      const message = JSON.stringify({ jsonrpc: '2.0', id: 4, result: { content: [{ type: 'text', text: 'z'.repeat(size) }] } });
      if (req.url?.startsWith('/sse')) {
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        res.write(`event: message\ndata: ${JSON.stringify({ jsonrpc: '2.0', method: 'notifications/progress', params: { progressToken: 1, progress: 1 } })}\n\n`);
        res.end(`event: message\ndata: ${message}\n\n`);
      } else {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(message);
      }
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(() => new Promise<void>((r) => server.close(() => r())));

  const post = { method: 'POST', body: JSON.stringify({ jsonrpc: '2.0', id: 4, method: 'tools/call', params: { name: 'x' } }) };

  it('passes answers within the limit through', async () => {
    const f = fetchWithin(5000, new OversizeAnswers());
    expect(((await (await f(`${url}/json?size=100`, post)).json()) as { id: number }).id).toBe(4);
    expect(await (await f(`${url}/sse?size=100`, post)).text()).toContain('zzzz');
  });

  it('a JSON answer over the limit becomes the stand-in answer for the request of that POST', async () => {
    const answers = new OversizeAnswers();
    const res = await fetchWithin(5000, answers)(`${url}/json?size=20000`, post);
    const body = (await res.json()) as { id: number };
    expect(body.id).toBe(4);
    const err = answers.errorOf(rejection(body));
    expect(err?.exact).toBe(false);
    expect(err?.bytes).toBeGreaterThan(5000);
  });

  it('an SSE event over the limit ends the stream with the stand-in answer', async () => {
    const answers = new OversizeAnswers();
    const text = await (await fetchWithin(5000, answers)(`${url}/sse?size=20000`, post)).text();
    expect(text.length).toBeLessThan(12_000);
    expect(text).toContain('notifications/progress');
    const last = text.trim().split('\n').at(-1) ?? '';
    const stand = JSON.parse(last.replace(/^data: /, '')) as { id: number };
    expect(stand.id).toBe(4);
    expect(answers.errorOf(rejection(stand))?.bytes).toBeGreaterThan(5000);
  });
});

// What a hostile upstream answers, served raw: an error answer of any type that never ends, and an SSE
// stream or answer that never comes. The gateway's side of each socket is counted from the server side.
describe('fetchWithin: every answer within the limit, and requests given up on aborted', () => {
  let server: Server;
  let url: string;
  /** Responses the server has open (each one a socket the gateway holds). */
  let open = 0;
  /** GET requests the server received. */
  let gets = 0;
  beforeAll(async () => {
    server = createServer((req, res) => {
      req.resume();
      open++;
      res.on('close', () => open--);
      const path = new URL(req.url ?? '/', 'http://x').pathname;
      if (req.method === 'GET') gets++;
      if (path === '/primed') {
        // A priming event (an id, no data), then keep-alives: the SDK resumes such a stream if it ends unanswered.
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        res.write('id: ev-1\n\n');
        const timer = setInterval(() => res.write(': keep-alive\n\n'), 20);
        res.on('close', () => clearInterval(timer));
        return;
      }
      if (path === '/trickle') {
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        const timer = setInterval(() => res.write(': keep-alive\n\n'), 20);
        res.on('close', () => clearInterval(timer));
        return;
      }
      if (path === '/hang') return; // no headers, ever
      if (path === '/accepted') return void res.writeHead(202).end();
      // 500 text/plain: an endless body, written for as long as it is read; 200 text/plain: 200 KB.
      res.writeHead(path === '/ok-text' ? 200 : 500, { 'content-type': 'text/plain' });
      const chunk = Buffer.alloc(16_384, 'B');
      let left = path === '/ok-text' ? 12 : Number.POSITIVE_INFINITY;
      const write = () => {
        while (!res.destroyed && left-- > 0) if (!res.write(chunk)) return;
        if (left < 0) res.end();
      };
      res.on('drain', write);
      write();
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(() => {
    server.closeAllConnections();
    return new Promise<void>((r) => server.close(() => r()));
  });

  const call = (id: number) => ({ method: 'POST', body: JSON.stringify({ jsonrpc: '2.0', id, method: 'tools/call', params: { name: 'x' } }) });
  const cancel = (id: number) => ({ method: 'POST', body: JSON.stringify({ jsonrpc: '2.0', method: 'notifications/cancelled', params: { requestId: id, reason: 'timed out' } }) });

  it('an error answer (500 text/plain) over the limit is not read whole: the POST fails with OversizeMessageError, its socket closed', async () => {
    const err = await fetchWithin(50_000, new OversizeAnswers())(`${url}/error`, call(4)).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(OversizeMessageError);
    expect((err as OversizeMessageError).bytes).toBeGreaterThan(50_000);
    expect((err as OversizeMessageError).bytes).toBeLessThan(50_000 + 1_048_576);
    await until(() => open === 0, 5000, 'the server to see the connection closed');
  });

  it('a 200 answer of another type fails once it is over the limit', async () => {
    const res = await fetchWithin(50_000, new OversizeAnswers())(`${url}/ok-text`, call(5));
    const err = await res.text().then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(OversizeMessageError);
    await until(() => open === 0, 5000, 'the server to see the connection closed');
  });

  it('notifications/cancelled for a request ends its SSE stream (no error) and closes its socket', async () => {
    const f = fetchWithin(50_000, new OversizeAnswers());
    const res = await f(`${url}/trickle`, call(6));
    const reader = (res.body as ReadableStream<Uint8Array>).getReader();
    expect((await reader.read()).done).toBe(false);
    expect(open).toBe(1);
    // Another request's cancellation leaves it open.
    await (await f(`${url}/accepted`, cancel(99))).body?.cancel();
    expect((await reader.read()).done).toBe(false);
    await (await f(`${url}/accepted`, cancel(6))).body?.cancel();
    for (let r = await reader.read(); !r.done; r = await reader.read()) {}
    await until(() => open === 0, 5000, 'the server to see the stream closed');
  });

  it('an answered request ends its SSE stream, which the upstream kept open, and closes its socket', async () => {
    const f = fetchWithin(50_000, new OversizeAnswers());
    const res = await f(`${url}/trickle`, call(8));
    const reader = (res.body as ReadableStream<Uint8Array>).getReader();
    expect((await reader.read()).done).toBe(false);
    f.answered(9); // another request
    expect((await reader.read()).done).toBe(false);
    f.answered(8);
    for (let r = await reader.read(); !r.done; r = await reader.read()) {}
    await until(() => open === 0, 5000, 'the server to see the stream closed');
  });

  it('the stream of a cancelled request is not resumed: a GET with its last event id is answered 405 without asking the upstream', async () => {
    const f = fetchWithin(50_000, new OversizeAnswers());
    const res = await f(`${url}/primed`, call(11));
    const reader = (res.body as ReadableStream<Uint8Array>).getReader();
    expect(new TextDecoder().decode((await reader.read()).value)).toContain('id: ev-1');
    await (await f(`${url}/accepted`, cancel(11))).body?.cancel();
    for (let r = await reader.read(); !r.done; r = await reader.read()) {}
    await until(() => open === 0, 5000, 'the server to see the stream closed');
    const before = gets;
    const resumed = await f(`${url}/primed`, { method: 'GET', headers: { accept: 'text/event-stream', 'last-event-id': 'ev-1' } });
    expect(resumed.status).toBe(405);
    expect(gets).toBe(before);
  });

  it('a POST without requests (a notification) that the upstream does not answer is closed after its time', async () => {
    const err = await fetchWithin(50_000, new OversizeAnswers(), fetch, 100)(`${url}/hang`, cancel(1)).then(
      () => undefined,
      (e: Error) => e,
    );
    expect(err?.message).toMatch(/did not answer a POST without requests \(a notification\) within 0.1 s; the gateway closed it/);
    await until(() => open === 0, 5000, 'the server to see the notification closed');
  });

  it('notifications/cancelled for a request not answered yet aborts its POST, which ends as an empty 202', async () => {
    const f = fetchWithin(50_000, new OversizeAnswers());
    const pending = f(`${url}/hang`, call(7));
    await until(() => open === 1, 5000, 'the request to reach the server');
    await (await f(`${url}/accepted`, cancel(7))).body?.cancel();
    const res = await pending;
    expect(res.status).toBe(202);
    expect(await res.text()).toBe('');
    await until(() => open === 0, 5000, 'the server to see the POST closed');
  });
});
