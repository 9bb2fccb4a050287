import { Worker } from 'node:worker_threads';
import type { Logger } from 'pino';
import { type PolicyParseResult, parsePolicy } from './load.js';

// Parses a reloaded policy file on a thread of its own (parse.worker.ts), so that decisions keep being
// answered from the policy in force meanwhile: the parse of a file near the 1 MiB cap took the event loop
// for 1.2–1.5 s (docs/performance.md, "Policy at scale"; docs/adr/0032-policy-parse-in-a-worker.md).
// Only the structured clone of the result is read on the event loop.
//
// The thread is started at a reload (most control planes never reload) and ended once no reload has used it
// for PARSE_THREAD_IDLE_MS: kept, a thread held its heap and modules (some tens of MB, in each process of
// WORKERS) for the life of the process after one reload; a later reload starts a new one (about 0.1–0.3 s,
// off the event loop). close() ends it. When it cannot be started, dies, or cannot post its result back, that file is parsed on
// the main thread as before (logged once at warn until a parse in the thread works again): a reload is
// never left unapplied, and never applied unchecked.

export interface ParseRequest {
  id: number;
  bytes: Uint8Array;
  file: string;
}

/** Where a file was parsed: logged with each reload. */
export type ParsedOn = 'thread' | 'event loop';

export type ParseReply = { id: number; result: PolicyParseResult } | { id: number; failed: string };

/**
 * The thread's entry. Run from the sources (tsx, vitest) this module is a .ts file and so is the entry, which
 * bin/tsx-worker.js loads through tsx's hooks; in the bundle (bin/bundle.js) this code sits in a chunk at
 * `.bundle/<key>/`, beside the bundled entry.
 */
const FROM_SOURCES = import.meta.url.endsWith('.ts');
export const PARSE_WORKER_URL = new URL(FROM_SOURCES ? './parse.worker.ts' : './parse.worker.js', import.meta.url);
const TSX_WORKER_URL = new URL('../../bin/tsx-worker.js', import.meta.url);

function newWorker(entry: URL): Worker {
  // A worker inherits the process's node options (--no-allocation-site-pretenuring, --max-old-space-size...).
  if (!entry.pathname.endsWith('.ts')) return new Worker(entry);
  return new Worker(TSX_WORKER_URL, { workerData: { entry: entry.href } });
}

interface Pending {
  resolve: (reply: ParseReply) => void;
  /** The thread it was sent to: only that thread's end fails it (an ended idle thread exits after the next one started). */
  worker: Worker;
}

/** A parser thread no reload has used for this long is ended. */
export const PARSE_THREAD_IDLE_MS = 60_000;

export interface PolicyParseThreadOptions {
  log: Logger;
  /** The thread's entry; tests point it at a file that is not there to see the main-thread fallback. */
  workerUrl?: URL;
  /** Default PARSE_THREAD_IDLE_MS. */
  idleMs?: number;
}

export class PolicyParseThread {
  private worker: Worker | undefined;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  /** A failure was logged and no parse in the thread has worked since: the next failure is not logged again. */
  private failing = false;
  private closed = false;
  private idleTimer: NodeJS.Timeout | undefined;

  constructor(private readonly opts: PolicyParseThreadOptions) {}

  /**
   * parsePolicy(bytes, file), in the thread; on the event loop when the thread cannot do it (`parsedOn`
   * says which). Never rejects for a broken file (problems come back as issues, as from parsePolicy).
   * Undefined when closed first.
   */
  async parse(bytes: Buffer, file: string): Promise<{ result: PolicyParseResult; parsedOn: ParsedOn } | undefined> {
    if (this.closed) return undefined;
    const reply = await this.request(bytes, file);
    if (this.closed) return undefined;
    if ('result' in reply) {
      this.failing = false;
      return { result: reply.result, parsedOn: 'thread' };
    }
    this.fellBack(reply.failed);
    return { result: parsePolicy(bytes, file), parsedOn: 'event loop' };
  }

  /** Whether a parser thread is running now (started by a reload, not yet ended for idleness). */
  get running(): boolean {
    return this.worker !== undefined;
  }

  /** Ends the thread; a parse in progress then gives undefined (its reload takes nothing). */
  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.idleTimer);
    const worker = this.worker;
    this.worker = undefined;
    if (worker) await worker.terminate();
  }

  private fellBack(why: string): void {
    if (this.failing) return;
    this.failing = true;
    this.opts.log.warn({ err: why }, 'policy parser thread unavailable; this reload is parsed on the main thread (decisions wait until it is done)');
  }

  /** Once nothing waits on the thread: ended after idleMs unless a reload uses it first. */
  private armIdle(): void {
    clearTimeout(this.idleTimer);
    if (this.pending.size > 0 || this.worker === undefined || this.closed) return;
    const worker = this.worker;
    this.idleTimer = setTimeout(() => {
      if (this.worker !== worker || this.pending.size > 0) return;
      this.worker = undefined;
      void worker.terminate();
    }, this.opts.idleMs ?? PARSE_THREAD_IDLE_MS);
    this.idleTimer.unref();
  }

  private request(bytes: Buffer, file: string): Promise<ParseReply> {
    clearTimeout(this.idleTimer);
    const id = this.nextId++;
    return new Promise<ParseReply>((resolve) => {
      let worker: Worker;
      try {
        worker = this.started();
      } catch (err) {
        resolve({ id, failed: `cannot start it: ${(err as Error).message}` });
        return;
      }
      this.pending.set(id, { resolve, worker });
      worker.postMessage({ id, bytes, file } satisfies ParseRequest);
    });
  }

  private started(): Worker {
    if (this.worker) return this.worker;
    const worker = newWorker(this.opts.workerUrl ?? PARSE_WORKER_URL);
    // An idle thread never keeps the process alive; close() ends it.
    worker.unref();
    const failAll = (why: string) => {
      if (this.worker === worker) this.worker = undefined;
      const waiting = [...this.pending].filter(([, p]) => p.worker === worker);
      for (const [id, p] of waiting) {
        this.pending.delete(id);
        p.resolve({ id, failed: why });
      }
    };
    worker.on('message', (reply: ParseReply) => {
      const p = this.pending.get(reply.id);
      this.pending.delete(reply.id);
      p?.resolve(reply);
      this.armIdle();
    });
    worker.on('error', (err) => failAll(`it failed: ${err.message}`));
    worker.on('exit', (code) => failAll(`it exited (code ${code})`));
    worker.on('messageerror', (err) => {
      failAll(`its answer could not be read: ${err.message}`);
      void worker.terminate();
    });
    this.worker = worker;
    return worker;
  }
}
