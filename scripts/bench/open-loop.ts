// A light open-loop load generator: requests are scheduled at a fixed rate whatever the answers do (a
// request never waits for an earlier answer: another socket is opened), so queueing in the server is
// never hidden (DESIGN.md §9: autocannon's -R sends in bursts and reports whole milliseconds). Latency
// is measured from the write of each request; the lag between its scheduled time and that write (the
// generator's 1 ms ticks) is reported apart.
//
// It speaks HTTP/1.1 over a pool of keep-alive sockets with pre-encoded requests and a minimal
// response reader (status line, Content-Length, body), one request in flight per socket. Node's
// http client costs tens of µs per request; on a 2-core machine that CPU is taken from the server
// being measured, so the generator is kept as cheap as we can make it.
//
// The generator's own pauses are part of every latency it measures: an answer that arrives while it
// is stopped is read late. A mark-compact of the benchmark process's large heap (tsx, autocannon, pg,
// the app for the in-process rows) took 14-17 ms and showed up as 30-40 ms stalls in the measured
// p99 of every workload. So `openLoopInChild` runs it in a process of its own that loads nothing else,
// records into preallocated typed arrays (nothing per answer outlives its answer) and collects garbage
// between the warm-up and the measured run.
//
//   node --expose-gc --import tsx scripts/bench/open-loop.ts '<json spec>'   (used by openLoopInChild)

import net from 'node:net';
import { fileURLToPath } from 'node:url';
import { answerAndExit, readyThenWait, startReadyChild } from './child.js';

export interface OpenLoopRequest {
  method: 'GET' | 'POST';
  path: string;
  headers: Record<string, string>;
  body?: string;
  /** When set, the `code` field of each JSON answer is counted. */
  expect?: string;
}

export interface OpenLoopResult {
  /** Sorted latencies in ms, from the moment each request was written to its whole answer. */
  latencies: number[];
  /** Sorted delays in ms between each request's scheduled time and its write: the generator's own lag
   * (1 ms timer ticks) plus any wait for a free connection. Reported so a lagging generator is seen. */
  lags: number[];
  /** Answers that were not 200, and connection errors. */
  errors: number;
  /** Answer `code` fields, for requests with `expect`. */
  codes: Record<string, number>;
  /** Per 250 ms of the schedule: requests sent, median and worst latency (ms). Shows whether the tail is spread or bunched. */
  windows: Array<{ at_s: number; n: number; p50_ms: number; max_ms: number }>;
  /** Per answer: ms after the start it was scheduled at, and its latency in ms (in answer order). */
  timeline: Array<[number, number]>;
  /** When the schedule started, in ms since the epoch. */
  timelineStart: number;
}

interface Pending {
  /** Its place in the schedule: sent at start + index / rate seconds. */
  index: number;
  sentAt: number;
  bytes: Buffer;
  expect: boolean;
}

class Connection {
  private buf: Buffer = Buffer.alloc(0);
  private current: Pending | undefined;
  private readonly socket: net.Socket;

  constructor(
    port: number,
    private readonly onDone: (c: Connection, p: Pending, status: number, body: Buffer) => void,
    private readonly onError: (c: Connection, p: Pending | undefined) => void,
  ) {
    this.socket = net.connect({ host: '127.0.0.1', port, noDelay: true });
    this.socket.on('data', (chunk: Buffer) => this.read(chunk));
    this.socket.on('error', () => this.fail());
    this.socket.on('close', () => this.fail());
  }

  send(p: Pending): void {
    p.sentAt = performance.now();
    this.current = p;
    this.socket.write(p.bytes);
  }

  close(): void {
    this.socket.removeAllListeners('close');
    this.socket.destroy();
  }

  private fail(): void {
    const p = this.current;
    this.current = undefined;
    this.onError(this, p);
  }

  private read(chunk: Buffer): void {
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
    const headerEnd = this.buf.indexOf('\r\n\r\n');
    if (headerEnd < 0 || !this.current) return;
    const head = this.buf.subarray(0, headerEnd).toString('latin1');
    const status = Number(head.slice(9, 12));
    const m = /\r\ncontent-length:\s*(\d+)/i.exec(head);
    const length = m ? Number(m[1]) : 0;
    const end = headerEnd + 4 + length;
    if (this.buf.length < end) return;
    const body = this.buf.subarray(headerEnd + 4, end);
    this.buf = this.buf.subarray(end);
    const p = this.current;
    this.current = undefined;
    this.onDone(this, p, status, body);
  }
}

function encode(r: OpenLoopRequest): Buffer {
  const body = r.body ?? '';
  const lines = [`${r.method} ${r.path} HTTP/1.1`, 'host: 127.0.0.1', 'connection: keep-alive'];
  for (const [k, v] of Object.entries(r.headers)) lines.push(`${k}: ${v}`);
  if (r.method !== 'GET') lines.push(`content-length: ${Buffer.byteLength(body)}`);
  return Buffer.from(`${lines.join('\r\n')}\r\n\r\n${body}`);
}

/** Sends `rate` requests per second for `seconds`, cycling through `requests`; resolves when all are answered. */
export async function openLoop(port: number, requests: readonly OpenLoopRequest[], rate: number, seconds: number): Promise<OpenLoopResult> {
  const encoded = requests.map(encode);
  const total = Math.round(rate * seconds);
  // One slot per request, filled by its index: nothing recorded per answer is a new heap object.
  const latencyOf = new Float64Array(total).fill(Number.NaN);
  const lagOf = new Float64Array(total).fill(Number.NaN);
  const answeredAt = new Int32Array(total); // answer order → index, for the timeline
  let start = 0;
  const codes: Record<string, number> = {};
  let errors = 0;
  const idle: Connection[] = [];
  const all = new Set<Connection>();
  const queue: Pending[] = [];
  let answered = 0;
  let finish: () => void = () => {};
  const finished = new Promise<void>((resolve) => {
    finish = resolve;
  });

  const settle = () => {
    answered++;
    if (answered >= total) finish();
  };
  const dispatch = (c: Connection) => {
    const next = queue.shift();
    if (next) c.send(next);
    else idle.push(c);
  };
  const onDone = (c: Connection, p: Pending, status: number, body: Buffer) => {
    latencyOf[p.index] = performance.now() - p.sentAt;
    lagOf[p.index] = p.sentAt - (start + (p.index / rate) * 1000);
    answeredAt[answered] = p.index;
    if (status !== 200) errors++;
    else if (p.expect) {
      const code = (JSON.parse(body.toString()) as { code: string }).code;
      codes[code] = (codes[code] ?? 0) + 1;
    }
    settle();
    dispatch(c);
  };
  const onError = (c: Connection, p: Pending | undefined) => {
    all.delete(c);
    const i = idle.indexOf(c);
    if (i >= 0) idle.splice(i, 1);
    if (p) {
      errors++;
      answeredAt[answered] = p.index;
      settle();
    }
  };
  const submit = (p: Pending) => {
    let c = idle.pop();
    if (!c && all.size < 512) {
      c = new Connection(port, onDone, onError);
      all.add(c);
    }
    if (c) c.send(p);
    else queue.push(p);
  };

  // Warm a few connections so the first requests do not pay for the TCP handshakes.
  for (let i = 0; i < 16; i++) {
    const c = new Connection(port, onDone, onError);
    all.add(c);
    idle.push(c);
  }
  await new Promise((r) => setTimeout(r, 100));

  start = performance.now();
  let sent = 0;
  const timer = setInterval(() => {
    const due = Math.min(total, Math.floor(((performance.now() - start) / 1000) * rate));
    while (sent < due) {
      const r = sent % requests.length;
      submit({ index: sent, sentAt: 0, bytes: encoded[r]!, expect: requests[r]!.expect !== undefined });
      sent++;
    }
    if (sent >= total) clearInterval(timer);
  }, 1);
  await finished;
  for (const c of all) c.close();

  // Failed requests have no latency (NaN): they count as errors only.
  const sortedOf = (a: Float64Array) => Array.from(a.filter((v) => !Number.isNaN(v))).sort((x, y) => x - y);
  const byWindow = new Map<number, number[]>();
  for (let i = 0; i < total; i++) {
    if (Number.isNaN(latencyOf[i]!)) continue;
    const w = Math.floor((i / rate) * 4);
    const list = byWindow.get(w);
    if (list) list.push(latencyOf[i]!);
    else byWindow.set(w, [latencyOf[i]!]);
  }
  const windows = [...byWindow]
    .sort(([a], [b]) => a - b)
    .map(([w, list]) => {
      list.sort((a, b) => a - b);
      return { at_s: w / 4, n: list.length, p50_ms: +list[Math.floor(list.length / 2)]!.toFixed(2), max_ms: +list[list.length - 1]!.toFixed(1) };
    });
  const timeline: Array<[number, number]> = [];
  for (let k = 0; k < answered; k++) {
    const i = answeredAt[k]!;
    if (!Number.isNaN(latencyOf[i]!)) timeline.push([(i / rate) * 1000, latencyOf[i]!]);
  }
  return { latencies: sortedOf(latencyOf), lags: sortedOf(lagOf), errors, codes, windows, timeline, timelineStart: performance.timeOrigin + start };
}

export interface OpenLoopChild {
  /** The child's pid (its CPU is not the server's). */
  pid: number;
  /** Starts the measured run (the warm-up is over when this object is returned) and resolves with its result. */
  run(): Promise<OpenLoopResult>;
}

/**
 * Starts the generator in a process of its own (see the header), runs the warm-up there for
 * `warmupSeconds`, collects its garbage and waits: the caller takes its CPU snapshots, then `run()`.
 */
export async function openLoopInChild(port: number, requests: readonly OpenLoopRequest[], rate: number, seconds: number, warmupSeconds: number): Promise<OpenLoopChild> {
  const spec = JSON.stringify({ port, requests, rate, seconds, warmupSeconds });
  const child = await startReadyChild('open-loop generator', ['--expose-gc', '--import', 'tsx', fileURLToPath(import.meta.url), spec]);
  return { pid: child.pid, run: () => child.ask<OpenLoopResult>('go') };
}

// As a child of openLoopInChild: warm up, collect garbage, say `ready`, wait for `go`, print the result.
if (process.argv[1] === fileURLToPath(import.meta.url) && process.argv[2]) {
  const spec = JSON.parse(process.argv[2]) as { port: number; requests: OpenLoopRequest[]; rate: number; seconds: number; warmupSeconds: number };
  if (spec.warmupSeconds > 0) await openLoop(spec.port, spec.requests, spec.rate, spec.warmupSeconds);
  (globalThis as { gc?: () => void }).gc?.();
  await readyThenWait();
  answerAndExit(await openLoop(spec.port, spec.requests, spec.rate, spec.seconds));
}
