import { randomUUID } from 'node:crypto';
import type { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import type { FetchLike } from '@modelcontextprotocol/sdk/shared/transport.js';
import { type JSONRPCMessage, JSONRPCMessageSchema, McpError, type RequestId } from '@modelcontextprotocol/sdk/types.js';
import type { UpstreamLimits } from './config.js';

// How large one upstream message may be before the gateway stops reading it. An upstream shared by
// every agent must survive one agent reading a huge file, and the control plane must learn how large
// that result was (LARGE_RESULT), so a message over the limit is counted and discarded, never parsed,
// and the call it answers fails with OversizeMessageError instead of a 0-byte error.

/** The floor of the per-message limit: well above any result the guards are meant to measure. */
export const MIN_MESSAGE_LIMIT_BYTES = 64 * 1_048_576;
/** How many bytes of an overflowing line are kept to find the request id it answers. */
const PEEK_BYTES = 256;
/** JSON-RPC code of the stand-in answer; recognised only with this process's nonce, never from an upstream. */
const OVERSIZE_CODE = -32050;

/** The largest message read from an upstream: 64 MB, or 4 × its maxResultBytes when that is more. */
export function messageLimitBytes(limits: Pick<UpstreamLimits, 'maxResultBytes'>): number {
  return Math.max(MIN_MESSAGE_LIMIT_BYTES, 4 * limits.maxResultBytes);
}

/** The upstream answered a call with a message too large to read; `bytes` is at least its size. */
export class OversizeMessageError extends Error {
  constructor(
    readonly bytes: number,
    /** false: the gateway stopped reading, the message was larger still. */
    readonly exact: boolean,
  ) {
    super(`the upstream answered with a message of ${exact ? '' : 'over '}${bytes} bytes, more than the gateway reads; it was discarded`);
    this.name = 'OversizeMessageError';
  }
}

/**
 * Makes and recognises the stand-in error answer for a discarded message. The nonce is this process's:
 * an upstream cannot forge the answer (it could only make the gateway withhold its own result).
 */
export class OversizeAnswers {
  private readonly nonce = randomUUID();

  answer(id: RequestId, bytes: number, exact: boolean): JSONRPCMessage {
    return { jsonrpc: '2.0', id, error: { code: OVERSIZE_CODE, message: 'oversize upstream message discarded', data: { 'killswitch/oversize': this.nonce, bytes, exact } } };
  }

  /** The OversizeMessageError a rejected request stands for, or undefined. */
  errorOf(err: unknown): OversizeMessageError | undefined {
    if (!(err instanceof McpError) || err.code !== OVERSIZE_CODE) return undefined;
    const data = err.data as { 'killswitch/oversize'?: unknown; bytes?: unknown; exact?: unknown } | undefined;
    if (data?.['killswitch/oversize'] !== this.nonce || typeof data.bytes !== 'number') return undefined;
    return new OversizeMessageError(data.bytes, data.exact === true);
  }
}

const ID = String.raw`(-?\d+|"(?:[^"\\]|\\.)*")`;
// The TypeScript SDK writes {"result":...,"jsonrpc":"2.0","id":N}; the Python SDK {"jsonrpc":"2.0","id":N,...}.
const ID_AT_START = [new RegExp(String.raw`^\s*\{\s*"jsonrpc"\s*:\s*"2\.0"\s*,\s*"id"\s*:\s*${ID}\s*,`), new RegExp(String.raw`^\s*\{\s*"id"\s*:\s*${ID}\s*,`)];
const ID_AT_END = [new RegExp(String.raw`[,{]\s*"id"\s*:\s*${ID}\s*\}\s*$`), new RegExp(String.raw`[,{]\s*"id"\s*:\s*${ID}\s*,\s*"jsonrpc"\s*:\s*"2\.0"\s*\}\s*$`)];

/** The request id a JSON-RPC message names, from its first and last bytes only. */
export function requestIdOf(head: string, tail: string): RequestId | undefined {
  for (const [text, patterns] of [
    [head, ID_AT_START],
    [tail, ID_AT_END],
  ] as const) {
    for (const p of patterns) {
      const m = p.exec(text);
      if (m?.[1] !== undefined) return JSON.parse(m[1]) as RequestId;
    }
  }
  return undefined;
}

function firstBytes(parts: readonly Buffer[], n: number): Buffer {
  const out: Buffer[] = [];
  let size = 0;
  for (const p of parts) {
    if (size >= n) break;
    out.push(p.subarray(0, n - size));
    size += Math.min(p.length, n - size);
  }
  return Buffer.from(Buffer.concat(out));
}

function lastBytes(before: Buffer, part: Buffer, n: number): Buffer {
  if (part.length >= n) return Buffer.from(part.subarray(part.length - n));
  const joined = Buffer.concat([before, part]);
  return Buffer.from(joined.subarray(Math.max(0, joined.length - n)));
}

/** What `messageOf` answers for a line that is not a message (no Error built per line). */
const UNREADABLE = Symbol('unreadable line');

/** How much of a line that is not a message the error quotes (the log cuts it again). */
const UNREADABLE_QUOTE_BYTES = 200;

/**
 * Could the SDK's JSONRPCMessageSchema accept this (a request, notification, result or error)? Looser
 * than the schema: only what it would refuse anyway is refused here, without building its error.
 */
function mayBeMessage(value: unknown): boolean {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return false;
  const m = value as Record<string, unknown>;
  if (m['jsonrpc'] !== '2.0') return false;
  const hasId = typeof m['id'] === 'string' || typeof m['id'] === 'number';
  return typeof m['method'] === 'string' || (hasId && 'result' in m) || 'error' in m;
}

interface Discarded {
  bytes: number;
  id: RequestId | undefined;
}

/**
 * Newline-delimited JSON-RPC from an upstream's stdout, in place of the SDK's ReadBuffer: that one
 * concatenates the whole buffer on every chunk (quadratic: ~100 s of blocked event loop for a 64 MB
 * message on a loaded 2-core machine) and closes the transport when a message exceeds its limit. This
 * one keeps chunks until the newline, and counts and discards a line over the limit, then answers the
 * request it names with the stand-in error carrying its exact size. Lines wait in a queue read by index:
 * `Array.prototype.shift` moves every line still queued, so an upstream writing blank or tiny lines
 * (65,536 in one 64 KB chunk) cost the shared event loop ~3 s per chunk, quadratic in lines per chunk.
 */
export class StdioMessageBuffer {
  private parts: Buffer[] = [];
  private size = 0;
  /** Lines not yet read; one read is replaced by undefined, so a large message is not held after it. */
  private ready: Array<Buffer | Discarded | undefined> = [];
  /** The next line of `ready` to read. */
  private readAt = 0;
  /** The message read after a run of unreadable lines, returned by the next readMessage. */
  private held: JSONRPCMessage | undefined;
  private skipping: { bytes: number; head: Buffer; tail: Buffer } | undefined;

  constructor(
    private readonly limitBytes: number,
    private readonly answers: OversizeAnswers,
  ) {}

  append(chunk: Buffer): void {
    let from = 0;
    for (let nl = chunk.indexOf(0x0a, from); nl !== -1; nl = chunk.indexOf(0x0a, from)) {
      this.take(chunk.subarray(from, nl));
      this.endLine();
      from = nl + 1;
    }
    this.take(chunk.subarray(from));
  }

  /**
   * The next message. Throws for lines that are not one (the SDK reports each throw, the gateway logs
   * it as a warning, and the SDK reads on): once for a whole run of them, so an upstream writing `{}`
   * lines costs the event loop a parse per line, not an error, a schema failure and a log line each
   * (~45 s per MB of them); the message after the run is read next.
   */
  readMessage(): JSONRPCMessage | null {
    if (this.held) {
      const held = this.held;
      this.held = undefined;
      return held;
    }
    let unreadable: { lines: number; first: Buffer | Discarded } | undefined;
    for (let next = this.nextLine(); next !== undefined; next = this.nextLine()) {
      let message: JSONRPCMessage | typeof UNREADABLE | undefined;
      try {
        message = this.messageOf(next);
      } catch {
        message = UNREADABLE;
      }
      if (message === undefined) continue;
      if (message === UNREADABLE) {
        unreadable ??= { lines: 0, first: next };
        unreadable.lines++;
        continue;
      }
      if (!unreadable) return message;
      this.held = message;
      break;
    }
    if (unreadable) throw this.unreadableRun(unreadable.lines, unreadable.first);
    return null;
  }

  /** A queued line as a message; undefined for a blank one. Throws for JSON the SDK's schema refuses. */
  private messageOf(next: Buffer | Discarded): JSONRPCMessage | typeof UNREADABLE | undefined {
    if (!Buffer.isBuffer(next)) return next.id !== undefined ? this.answers.answer(next.id, next.bytes, true) : UNREADABLE;
    const text = next.toString('utf8').trim();
    if (text === '') return undefined;
    if (!text.startsWith('{')) return UNREADABLE;
    const value: unknown = JSON.parse(text);
    // Only what the SDK's schema could accept goes through it: a failed schema check is its dearest part.
    return mayBeMessage(value) ? JSONRPCMessageSchema.parse(value) : UNREADABLE;
  }

  /** One error for a run of lines that are not messages, saying what was wrong with the first. */
  private unreadableRun(lines: number, first: Buffer | Discarded): Error {
    const problem = this.problemOf(first);
    return lines === 1 ? problem : new Error(`${lines} lines in a row from the upstream were not JSON-RPC messages; the first: ${problem.message}`);
  }

  private problemOf(line: Buffer | Discarded): Error {
    if (!Buffer.isBuffer(line)) return new Error(`discarded a ${line.bytes}-byte message from the upstream (over the gateway's limit of ${this.limitBytes} bytes) that names no request`);
    try {
      this.messageOf(line);
    } catch (err) {
      return err as Error;
    }
    return new Error(`not a JSON-RPC 2.0 message: ${line.subarray(0, UNREADABLE_QUOTE_BYTES).toString('utf8').trim()}`);
  }

  clear(): void {
    this.parts = [];
    this.size = 0;
    this.ready = [];
    this.readAt = 0;
    this.held = undefined;
    this.skipping = undefined;
  }

  /** The next queued line, in O(1); the queue is emptied once read to its end (the SDK reads it after every chunk). */
  private nextLine(): Buffer | Discarded | undefined {
    const next = this.ready[this.readAt];
    if (next === undefined) {
      if (this.readAt > 0) this.ready = [];
      this.readAt = 0;
      return undefined;
    }
    this.ready[this.readAt++] = undefined;
    return next;
  }

  private take(part: Buffer): void {
    if (part.length === 0) return;
    if (this.skipping) {
      this.skipping.bytes += part.length;
      this.skipping.tail = lastBytes(this.skipping.tail, part, PEEK_BYTES);
      return;
    }
    this.parts.push(part);
    this.size += part.length;
    if (this.size > this.limitBytes) {
      let tail: Buffer = Buffer.alloc(0);
      for (const p of this.parts.slice(-8)) tail = lastBytes(tail, p, PEEK_BYTES);
      this.skipping = { bytes: this.size, head: firstBytes(this.parts, PEEK_BYTES), tail };
      this.parts = [];
      this.size = 0;
    }
  }

  private endLine(): void {
    if (this.skipping) {
      const { bytes, head, tail } = this.skipping;
      this.skipping = undefined;
      this.ready.push({ bytes, id: requestIdOf(head.toString('utf8'), tail.toString('utf8')) });
      return;
    }
    // A blank line is no message: not queued at all.
    if (this.size > 0) this.ready.push(this.parts.length === 1 ? (this.parts[0] as Buffer) : Buffer.concat(this.parts));
    this.parts = [];
    this.size = 0;
  }
}

/**
 * Puts the buffer in place of the SDK transport's own (a private field of SDK 1.x; the `maxBufferSize`
 * passed to the transport stays as the fallback). False when this SDK has no such field.
 */
export function installMessageBuffer(transport: StdioClientTransport, buffer: StdioMessageBuffer): boolean {
  const slot = transport as unknown as { _readBuffer?: unknown };
  const current = slot._readBuffer as { append?: unknown; readMessage?: unknown } | undefined;
  if (typeof current?.append !== 'function' || typeof current.readMessage !== 'function') return false;
  slot._readBuffer = buffer;
  return true;
}

/** What a POST body the SDK sends holds: the ids of its requests, the requests it cancels. */
function postedIn(body: unknown): { ids: RequestId[]; cancels: RequestId[] } {
  const out: { ids: RequestId[]; cancels: RequestId[] } = { ids: [], cancels: [] };
  if (typeof body !== 'string') return out;
  let parsed: unknown;
  try {
    parsed = JSON.parse(body);
  } catch {
    return out;
  }
  const isId = (id: unknown): id is RequestId => typeof id === 'number' || typeof id === 'string';
  for (const m of (Array.isArray(parsed) ? parsed : [parsed]) as Array<{ method?: unknown; id?: unknown; params?: { requestId?: unknown } } | null>) {
    if (typeof m?.method !== 'string') continue;
    if (isId(m.id)) out.ids.push(m.id);
    else if (m.method === 'notifications/cancelled' && isId(m.params?.requestId)) out.cancels.push(m.params.requestId);
  }
  return out;
}

function headersWithoutLength(res: Response): Headers {
  const headers = new Headers(res.headers);
  headers.delete('content-length');
  headers.delete('content-encoding');
  return headers;
}

/** An SSE stream passed through while no event is over the limit; then the stand-in answers end it. */
function sseWithin(limitBytes: number, ids: RequestId[], answers: OversizeAnswers): TransformStream<Uint8Array, Uint8Array> {
  let eventBytes = 0;
  let lastByte = -1;
  const encoder = new TextEncoder();
  return new TransformStream({
    transform(chunk, controller) {
      let eventStart = 0;
      for (let i = 0; i < chunk.length; i++) {
        eventBytes++;
        if (eventBytes > limitBytes) {
          if (ids.length === 0) {
            controller.error(new OversizeMessageError(limitBytes, false));
            return;
          }
          // Whole events before the oversize one pass; the partial event ends here (the SDK reports it
          // as unparsable); the answers follow, and nothing more is read.
          if (eventStart > 0) controller.enqueue(chunk.subarray(0, eventStart));
          const stand = ids.map((id) => `event: message\ndata: ${JSON.stringify(answers.answer(id, limitBytes + 1, false))}\n\n`).join('');
          controller.enqueue(encoder.encode(`\n\n${stand}`));
          controller.terminate();
          return;
        }
        // An event ends at a blank line: "\n\n", "\r\r" or "\n\r" (the start of "\r\n\r\n").
        const b = chunk[i] as number;
        const prev = i > 0 ? (chunk[i - 1] as number) : lastByte;
        if ((prev === 0x0a && (b === 0x0a || b === 0x0d)) || (prev === 0x0d && b === 0x0d)) {
          eventBytes = 0;
          eventStart = i + 1;
        }
      }
      if (chunk.length > 0) lastByte = chunk[chunk.length - 1] as number;
      controller.enqueue(chunk);
    },
  });
}

/** A body read whole, up to the limit: past it, the rest is not read (the stream is cancelled) and `over` says how much came. */
async function readWithin(body: ReadableStream<Uint8Array>, limitBytes: number): Promise<{ bytes: Buffer; over?: undefined } | { over: number }> {
  const reader = body.getReader();
  const parts: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return { bytes: Buffer.concat(parts) };
    size += value.length;
    if (size > limitBytes) {
      await reader.cancel().catch(() => {});
      return { over: size };
    }
    parts.push(value);
  }
}

/** A body of any other type passed through until it is over the limit; then it fails and is not read further. */
function cappedStream(limitBytes: number): TransformStream<Uint8Array, Uint8Array> {
  let size = 0;
  return new TransformStream({
    transform(chunk, controller) {
      size += chunk.length;
      if (size > limitBytes) controller.error(new OversizeMessageError(size, false));
      else controller.enqueue(chunk);
    },
  });
}

/**
 * Every answer body through the limit, whatever its status or type. The SDK reads an error answer
 * (any status but 2xx) whole, for the text of its error: one over the limit fails the send with
 * OversizeMessageError, which the requests of that POST reject with (LARGE_RESULT, like an oversize
 * result). A JSON answer is read here and one over the limit becomes the stand-in answers; an SSE
 * stream is passed through while no event is over the limit; any other type (the SDK reads none)
 * fails once it is over.
 */
async function within(res: Response, limitBytes: number, ids: RequestId[], answers: OversizeAnswers): Promise<Response> {
  if (!res.body) return res;
  const init = { status: res.status, statusText: res.statusText, headers: headersWithoutLength(res) };
  if (!res.ok) {
    const read = await readWithin(res.body, limitBytes);
    if (read.over !== undefined) throw new OversizeMessageError(read.over, false);
    return new Response(read.bytes, init);
  }
  const type = (res.headers.get('content-type') ?? '').split(';')[0]?.trim().toLowerCase();
  if (type === 'application/json') {
    const read = await readWithin(res.body, limitBytes);
    if (read.over === undefined) return new Response(read.bytes, init);
    const stand = ids.map((id) => answers.answer(id, read.over, false));
    return new Response(JSON.stringify(stand.length === 1 ? stand[0] : stand), init);
  }
  if (type === 'text/event-stream') return new Response(res.body.pipeThrough(sseWithin(limitBytes, ids, answers)), init);
  return new Response(res.body.pipeThrough(cappedStream(limitBytes)), init);
}

/**
 * The body as the SDK reads it, ended (not failed: the SDK would report a failed stream as a protocol
 * error) once `signal` aborts; the source is cancelled, which closes its socket. `finished` runs once,
 * when the body ended either way.
 */
function endsOnAbort(body: ReadableStream<Uint8Array>, signal: AbortSignal, finished: () => void): ReadableStream<Uint8Array> {
  const reader = body.getReader();
  let ended = false;
  let controller: ReadableStreamDefaultController<Uint8Array> | undefined;
  const end = () => {
    if (ended) return;
    ended = true;
    signal.removeEventListener('abort', onAbort);
    finished();
  };
  const onAbort = () => {
    end();
    reader.cancel().catch(() => {});
    try {
      controller?.close();
    } catch {
      // already closed
    }
  };
  return new ReadableStream<Uint8Array>({
    start(c) {
      controller = c;
      if (signal.aborted) onAbort();
      else signal.addEventListener('abort', onAbort, { once: true });
    },
    async pull(c) {
      try {
        const { value, done } = await reader.read();
        if (done) {
          end();
          c.close();
        } else c.enqueue(value);
      } catch (err) {
        if (signal.aborted) return; // ended by onAbort
        end();
        c.error(err);
      }
    },
    cancel(reason) {
      end();
      return reader.cancel(reason);
    },
  });
}

/** The longest `id:` line of an SSE stream kept (an event id is short; a longer one is not remembered). */
const MAX_EVENT_ID_LINE = 1024;

/** Passes an SSE stream through, noting the last event id it carried (`id: ...`). */
function eventIds(seen: (id: string) => void): TransformStream<Uint8Array, Uint8Array> {
  const decoder = new TextDecoder();
  /** The start of the current line, while it may be an id line; undefined once it cannot be. */
  let partial: string | undefined = '';
  return new TransformStream({
    transform(chunk, controller) {
      const lines = decoder.decode(chunk, { stream: true }).split(/\r\n|\r|\n/);
      const rest = lines.pop() as string;
      for (const line of lines) {
        const whole = partial === undefined ? undefined : partial + line;
        if (whole?.startsWith('id:')) seen(whole.slice(whole.startsWith('id: ') ? 4 : 3));
        partial = '';
      }
      // Only a line that may be an id line is kept across chunks, and only so much of it.
      if (partial !== undefined) partial += rest;
      if (partial !== undefined && (!(partial.startsWith('id:') || 'id:'.startsWith(partial)) || partial.length > MAX_EVENT_ID_LINE)) partial = undefined;
      controller.enqueue(chunk);
    },
  });
}

/** The requests of one POST still in flight, and the abort of its HTTP request. */
interface InFlight {
  readonly abort: AbortController;
  readonly pending: Set<RequestId>;
  /** The last event id of its SSE stream: the SDK resumes a stream it saw one on, if it ends unanswered. */
  lastEventId?: string;
}

/**
 * How long a POST that carries no request may take, its answer's body included: a notification
 * (initialized, cancelled) or the gateway's answer to an upstream's request, which the upstream
 * answers at once (202). One that does not is closed, or it would hold a socket for as long as the
 * upstream likes: each cancelled call sends one.
 */
export const NOTIFICATION_TIMEOUT_MS = 30_000;

/** The fetch of one Streamable HTTP connection, told which requests were answered. */
export interface UpstreamFetch extends FetchLike {
  /** The request was answered (the SDK received its response): the rest of its POST is not read. */
  answered(id: RequestId): void;
}

/**
 * fetch for the Streamable HTTP client, with the same limit on everything an upstream answers (see
 * `within`), and no request left open once the gateway is done with it. The SDK runs every request of
 * a connection under one AbortSignal (its close) and, when a request times out or its caller cancels
 * it, sends notifications/cancelled and forgets it, but the HTTP request or SSE stream that would have
 * carried its answer stays open for as long as the upstream keeps it so (a keep-alive every second:
 * for ever), a socket each; so does the SSE stream of an answered request that the upstream does not
 * end. A POST's request is done when that notification passes through here or when `answered` says
 * so; once every request of the POST is, its HTTP request is aborted: before its answer arrives, the
 * POST ends as an empty 202 (the SDK expects nothing more); after, its body ends. Either way the socket
 * is released.
 */
export function fetchWithin(limitBytes: number, answers: OversizeAnswers, base: FetchLike = fetch, notificationTimeoutMs = NOTIFICATION_TIMEOUT_MS): UpstreamFetch {
  const inFlight = new Map<RequestId, InFlight>();
  /** Last event ids of streams ended for cancelled requests: their resumption is not asked for. */
  const dropped = new Set<string>();
  const finished = (id: RequestId, cancelled: boolean) => {
    const request = inFlight.get(id);
    if (!request) return;
    inFlight.delete(id);
    request.pending.delete(id);
    if (request.pending.size > 0) return;
    // Its stream ends unanswered: the SDK would resume it (GET with Last-Event-ID) and hold that instead.
    if (cancelled && request.lastEventId !== undefined) {
      if (dropped.size >= 1000) dropped.clear();
      dropped.add(request.lastEventId);
    }
    request.abort.abort();
  };
  const fetchLike: FetchLike = async (url, init) => {
    const post = (init?.method ?? 'GET').toUpperCase() === 'POST';
    const { ids, cancels } = post ? postedIn(init?.body) : { ids: [], cancels: [] };
    for (const id of cancels) finished(id, true);
    if (ids.length === 0) {
      if (!post) {
        const resumes = new Headers(init?.headers).get('last-event-id');
        if (resumes !== null && dropped.delete(resumes)) return new Response(null, { status: 405 }); // the SDK gives up quietly
        return within(await base(url, init), limitBytes, ids, answers);
      }
      const timeout = AbortSignal.timeout(notificationTimeoutMs);
      try {
        return await within(await base(url, { ...init, signal: init?.signal ? AbortSignal.any([init.signal, timeout]) : timeout }), limitBytes, ids, answers);
      } catch (err) {
        if (timeout.aborted && !init?.signal?.aborted) throw new Error(`the upstream did not answer a POST without requests (a notification) within ${notificationTimeoutMs / 1000} s; the gateway closed it`);
        throw err;
      }
    }

    const request: InFlight = { abort: new AbortController(), pending: new Set(ids) };
    for (const id of ids) inFlight.set(id, request);
    const done = () => {
      for (const id of ids) if (inFlight.get(id) === request) inFlight.delete(id);
    };
    const own = request.abort.signal;
    try {
      const res = await within(await base(url, { ...init, signal: init?.signal ? AbortSignal.any([init.signal, own]) : own }), limitBytes, ids, answers);
      if (!res.body) {
        done();
        return res;
      }
      const sse = (res.headers.get('content-type') ?? '').split(';')[0]?.trim().toLowerCase() === 'text/event-stream';
      const body = sse ? res.body.pipeThrough(eventIds((id) => (request.lastEventId = id))) : res.body;
      return new Response(endsOnAbort(body, own, done), { status: res.status, statusText: res.statusText, headers: res.headers });
    } catch (err) {
      done();
      if (own.aborted && !init?.signal?.aborted) return new Response(null, { status: 202 });
      throw err;
    }
  };
  return Object.assign(fetchLike, { answered: (id: RequestId) => finished(id, false) });
}
