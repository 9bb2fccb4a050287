import { createHash } from 'node:crypto';
import { type FSWatcher, watch } from 'node:fs';
import { stat } from 'node:fs/promises';
import { basename, dirname, isAbsolute, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from 'pino';
import type { AdminAction } from '../audit/rows.js';
import { ConfigError } from '../config.js';
import { formatIssue, PolicyFileError } from './issues.js';
import { loadPolicyFile, parsePolicy, readPolicyBytes } from './load.js';
import { PolicyParseThread } from './parse-thread.js';
import { droppedSections } from './sections.js';
import type { CompiledPolicy } from './types.js';

// Holds the active policy and swaps it when the file changes. The directory is watched (editors and
// config-map mounts replace files by rename, which a watch on the file itself would miss) and stat'ed
// on a timer as a safety net for file systems where fs.watch is silent or unavailable. A broken file
// never replaces a working policy: it is logged and the last good one stays in force.
//
// A file rewritten in place is read only once it has settled: its size, mtime and inode unchanged for
// POLICY_SETTLE_MS, and the same before and after the read (read twice, same bytes). A writer that pauses
// longer than that mid-file can still be read half-written, so a reload that drops a top-level section
// the policy in force has is refused as well (sections.ts). Replacing the file by rename avoids both.

/** How long the policy file must stay unchanged (size, mtime, inode) before a reload reads it. */
export const POLICY_SETTLE_MS = 500;

/**
 * The smallest reloaded file parsed on the parser thread (16 KiB). A smaller one holds the event loop for
 * ~25 ms at most on a slow 2-core machine (~1.5 ms per KiB), less than starting the thread takes (~0.5 s
 * of CPU, ~1 s from the sources), and most policies are a few KB: they reload as before, with no thread.
 */
export const POLICY_THREAD_MIN_BYTES = 16 * 1024;

/**
 * The absolute path of POLICY_FILE; a ConfigError naming it when nothing is there, or when it is not a
 * regular file (a FIFO would block the read forever, /dev/zero never ends). A relative POLICY_FILE is
 * resolved against the working directory, so the same command run from another directory finds
 * nothing: the message shows where it looked. Other read errors (and a file over the size cap) are left
 * to the loader, which reports them with the file's issues.
 */
export async function requirePolicyFile(path: string): Promise<string> {
  const full = resolve(path);
  try {
    const s = await stat(full);
    if (!s.isFile()) {
      const kind = s.isDirectory() ? 'a directory' : s.isFIFO() ? 'a FIFO (named pipe)' : s.isCharacterDevice() ? 'a character device' : s.isBlockDevice() ? 'a block device' : s.isSocket() ? 'a socket' : 'not a regular file';
      throw new ConfigError(
        'POLICY_FILE',
        `POLICY_FILE=${JSON.stringify(path)} is invalid: ${full} is ${kind}, not a regular file. Point POLICY_FILE at the policy file itself. Example: POLICY_FILE=/etc/killswitch/policy.yaml`,
      );
    }
  } catch (err) {
    if (err instanceof ConfigError) throw err;
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT' && (err as NodeJS.ErrnoException).code !== 'ENOTDIR') return full;
    const relative = !isAbsolute(path) ? ` (POLICY_FILE is relative, so it is resolved against the working directory, ${process.cwd()})` : '';
    throw new ConfigError(
      'POLICY_FILE',
      `POLICY_FILE=${JSON.stringify(path)} is invalid: no file at ${full}${relative}. Set POLICY_FILE to the policy file's absolute path, or start from the directory it is relative to. Example: POLICY_FILE=/etc/killswitch/policy.yaml`,
    );
  }
  return full;
}

export interface PolicyReloadEvent {
  /** sha256 (hex) of the new file's bytes. */
  hash: string;
  previousHash: string;
  path: string;
  policy: CompiledPolicy;
}

export type PolicyReloadListener = (event: PolicyReloadEvent) => void | Promise<void>;

/** A file on disk that was not taken: told once per rejected version (its hash, or once per read error). */
export interface PolicyRejectEvent {
  /** sha256 (hex) of the rejected bytes; null when the file could not be read. */
  hash: string | null;
  /** The errors, each with its line and column (or why the file could not be read). */
  errors: string[];
  /** The hash of the last good policy, which stays in force. */
  keptHash: string;
  path: string;
}

export type PolicyRejectListener = (event: PolicyRejectEvent) => void;

/** How many errors of a rejected file its `policy.rejected` row carries (the log line has them all). */
export const REJECTED_ERRORS_AUDITED = 5;
/** How many distinct rejected versions are remembered as audited while one policy stays in force. */
const AUDITED_REJECTIONS_MAX = 1000;

export interface PolicyStoreOptions {
  log: Logger;
  /** Watch the directory with fs.watch. Default true; polling alone when false or unavailable. */
  watch?: boolean;
  /** Stat interval of the polling safety net. Default 5000 ms with a watch, 1000 ms without. */
  pollIntervalMs?: number;
  /** Quiet time after a change event before reading (editors write in several steps). Default 50 ms. */
  debounceMs?: number;
  /** How long the file must stay unchanged before a reload reads it. Default POLICY_SETTLE_MS. */
  settleMs?: number;
  /**
   * A reloaded file of at least this many bytes is parsed on the parser thread (parse-thread.ts), a smaller
   * one on the event loop. Default POLICY_THREAD_MIN_BYTES; 0: every reload in the thread.
   */
  parseThreadMinBytes?: number;
  /** The parser thread's entry (parse-thread.ts PARSE_WORKER_URL); tests name one that is not there. */
  parseWorkerUrl?: URL;
}

/** The last version of the file not taken since the policy in force was loaded. */
export interface PolicyRejection {
  /** sha256 (hex) of the rejected bytes; null when the file could not be read. */
  hash: string | null;
  at: Date;
  /** As the log line `policy file rejected` gives them. */
  errors: string[];
  /** Warnings about the rejected file (beside its errors). */
  warnings: string[];
}

export interface PolicyStatus {
  path: string;
  hash: string;
  loadedAt: Date;
  watching: 'fs.watch' | 'polling';
  /** Why the file on disk is not in force (null when it is). */
  lastError: string | null;
  /** Versions of the file rejected since start (each distinct file, or read error, counted once). */
  rejections: number;
  /** The last rejected version since the policy in force was loaded (null when none). */
  lastRejected: PolicyRejection | null;
}

export class PolicyStore {
  private active: CompiledPolicy;
  private readonly listeners = new Set<PolicyReloadListener>();
  private readonly rejectListeners = new Set<PolicyRejectListener>();
  private rejections = 0;
  private lastRejected: PolicyRejection | null = null;
  private recordAdmin: ((a: AdminAction) => Promise<void>) | undefined;
  /**
   * The rejected versions (hashes, or read errors) audited since the policy in force was loaded: each
   * gets one `policy.rejected` row, however often it is read again (a file put back after another was
   * rejected, or after it could not be read, is not a new rejection).
   */
  private readonly auditedRejections = new Set<string>();
  /** Top-level keys of the file in force: a reload may not drop a guarded one (sections.ts). */
  private sections: ReadonlySet<string>;
  private readonly stopping = new AbortController();
  private watcher: FSWatcher | undefined;
  private pollTimer: NodeJS.Timeout | undefined;
  private debounceTimer: NodeJS.Timeout | undefined;
  private statSignature = '';
  private rejectedHash: string | undefined;
  private lastError: string | null = null;
  private chain: Promise<unknown> = Promise.resolve();
  private closed = false;
  /** Parses the reloads of large files off the event loop (its thread is started at the first one). */
  private readonly parser: PolicyParseThread;
  readonly path: string;

  private constructor(
    path: string,
    policy: CompiledPolicy,
    sections: ReadonlySet<string>,
    private readonly opts: PolicyStoreOptions,
  ) {
    this.path = path;
    this.active = policy;
    this.sections = sections;
    this.parser = new PolicyParseThread({ log: opts.log, ...(opts.parseWorkerUrl ? { workerUrl: opts.parseWorkerUrl } : {}) });
  }

  /**
   * Loads the file (throws PolicyFileError when it is broken, ConfigError naming POLICY_FILE when it does
   * not exist: a control plane never starts without a policy) and starts watching. The first load parses on
   * the main thread: nothing is answered yet, and most control planes never start the parser thread.
   */
  static async open(path: string, opts: PolicyStoreOptions): Promise<PolicyStore> {
    const full = await requirePolicyFile(path);
    const result = await loadPolicyFile(path);
    if (!result.ok) throw new PolicyFileError(path, result.issues, result.omittedErrors);
    for (const w of result.policy.warnings) opts.log.warn({ policy: path }, `policy: ${formatIssue(w)}`);
    opts.log.info({ policy: path, hash: result.policy.hash, servers: result.policy.servers.size }, 'policy loaded');
    const store = new PolicyStore(full, result.policy, result.sections, opts);
    store.statSignature = await store.signature();
    store.startWatching();
    return store;
  }

  /** The policy in force. Cheap: call it per decision rather than keeping a reference. */
  current(): CompiledPolicy {
    return this.active;
  }

  status(): PolicyStatus {
    return {
      path: this.path,
      hash: this.active.hash,
      loadedAt: this.active.loadedAt,
      watching: this.watcher ? 'fs.watch' : 'polling',
      lastError: this.lastError,
      rejections: this.rejections,
      lastRejected: this.lastRejected,
    };
  }

  /** Called once per rejected version of the file (not again while the same file stays). Returns an unsubscribe function. */
  onReject(listener: PolicyRejectListener): () => void {
    this.rejectListeners.add(listener);
    return () => this.rejectListeners.delete(listener);
  }

  /** Where a rejected version is audited (`policy.rejected`, kind POLICY_RELOAD); app.ts wires ctx.audit.recordAdmin. */
  setAdminRecorder(record: (a: AdminAction) => Promise<void>): void {
    this.recordAdmin = record;
  }

  private rejected(hash: string | null, errors: string[], warnings: string[] = []): void {
    this.rejections++;
    this.lastRejected = { hash, at: new Date(), errors, warnings };
    const event: PolicyRejectEvent = { hash, errors, keptHash: this.active.hash, path: this.path };
    this.auditRejection(event);
    for (const listener of this.rejectListeners) {
      try {
        listener(event);
      } catch (err) {
        this.opts.log.error({ err: (err as Error).message, policy: this.path }, 'policy reject listener failed');
      }
    }
  }

  /**
   * The `policy.rejected` row of a rejected version, once per version while the policy in force stays
   * (every replica watching the file writes its own). Not awaited: a reload is never held up by the
   * audit trail, and a row it cannot take is logged by it (`audit row for an admin action could not be
   * written`); the POLICY_REJECTED alert and GET /v1/policy still say it.
   */
  private auditRejection(e: PolicyRejectEvent): void {
    const version = e.hash ?? `unreadable:${e.errors[0] ?? ''}`;
    if (!this.recordAdmin || this.auditedRejections.has(version)) return;
    if (this.auditedRejections.size >= AUDITED_REJECTIONS_MAX) this.auditedRejections.clear();
    this.auditedRejections.add(version);
    void this.recordAdmin({
      actor: 'policy-watcher',
      kind: 'POLICY_RELOAD',
      action: 'policy.rejected',
      target: `policy:${e.path}`,
      details: { rejected_hash: e.hash, kept_hash: e.keptHash, errors: e.errors.slice(0, REJECTED_ERRORS_AUDITED), errors_total: e.errors.length },
    }).catch(() => {});
  }

  /** Called after every reload that takes effect (not at the first load). Returns an unsubscribe function. */
  onReload(listener: PolicyReloadListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /**
   * Re-reads the file once it has settled (settleMs unchanged). 'unchanged' when its bytes did not change;
   * 'rejected' when it is broken or drops a guarded section (the old policy stays).
   */
  reload(): Promise<'reloaded' | 'unchanged' | 'rejected'> {
    const next = this.chain.then(() => this.reloadNow());
    this.chain = next.catch(() => {});
    return next;
  }

  async close(): Promise<void> {
    this.closed = true;
    this.stopping.abort();
    this.watcher?.close();
    this.watcher = undefined;
    if (this.pollTimer) clearInterval(this.pollTimer);
    if (this.debounceTimer) clearTimeout(this.debounceTimer);
    // Ends a parse in progress too: its reload then takes nothing (below).
    await this.parser.close();
    await this.chain;
  }

  private startWatching(): void {
    const { log } = this.opts;
    let watching = false;
    if (this.opts.watch !== false) {
      try {
        const file = basename(this.path);
        this.watcher = watch(dirname(this.path), { persistent: false }, (_event, name) => {
          // null names happen on some platforms; `..data` swaps are how Kubernetes updates mounted files.
          if (name === null || name === file || name.startsWith('..')) this.scheduleReload();
        });
        this.watcher.on('error', (err) => {
          log.warn({ err: err.message, policy: this.path }, 'policy file watch failed; polling instead');
          this.watcher?.close();
          this.watcher = undefined;
          this.startPolling(1000);
        });
        watching = true;
      } catch (err) {
        log.warn({ err: (err as Error).message, policy: this.path }, 'fs.watch unavailable for the policy file; polling instead');
      }
    }
    this.startPolling(this.opts.pollIntervalMs ?? (watching ? 5000 : 1000));
  }

  private startPolling(intervalMs: number): void {
    if (this.pollTimer) clearInterval(this.pollTimer);
    this.pollTimer = setInterval(() => {
      void this.signature().then((sig) => {
        if (sig !== this.statSignature) {
          this.statSignature = sig;
          this.scheduleReload(0);
        }
      });
    }, intervalMs);
    this.pollTimer.unref();
  }

  private scheduleReload(delay = this.opts.debounceMs ?? 50): void {
    if (this.closed) return;
    if (this.debounceTimer) clearTimeout(this.debounceTimer);
    this.debounceTimer = setTimeout(() => void this.reload(), delay);
    this.debounceTimer.unref();
  }

  private async signature(): Promise<string> {
    try {
      const s = await stat(this.path);
      return `${s.ino}:${s.size}:${s.mtimeMs}`;
    } catch {
      return 'missing';
    }
  }

  /**
   * The file's bytes once it has settled: the same size, mtime and inode across settleMs, and again after
   * the read, whose bytes a second read confirms. Waits as long as the file keeps changing; undefined
   * when the store is closed meanwhile.
   */
  private async readSettled(): Promise<Buffer | { error: Error } | undefined> {
    const settleMs = this.opts.settleMs ?? POLICY_SETTLE_MS;
    let seen = await this.signature();
    for (;;) {
      try {
        await sleep(settleMs, undefined, { signal: this.stopping.signal });
      } catch {
        return undefined;
      }
      const now = await this.signature();
      if (now !== seen) {
        seen = now;
        continue;
      }
      let bytes: Buffer;
      let again: Buffer;
      try {
        bytes = await readPolicyBytes(this.path);
        again = await readPolicyBytes(this.path);
      } catch (err) {
        if ((await this.signature()) !== now) continue;
        return { error: err as Error };
      }
      const after = await this.signature();
      if (after !== now || !bytes.equals(again)) {
        seen = after;
        continue;
      }
      this.statSignature = after;
      return bytes;
    }
  }

  /**
   * reloadOnce, with any exception it throws (a bug: a broken file comes back as issues) reported as a
   * rejected file, logged at error with its message: a reload is started by a timer, where a rejection
   * would be lost, and the policy in force stays either way.
   */
  private async reloadNow(): Promise<'reloaded' | 'unchanged' | 'rejected'> {
    try {
      return await this.reloadOnce();
    } catch (err) {
      const why = `the policy file could not be checked: ${(err as Error).message ?? String(err)}`;
      const fresh = this.lastError !== why;
      if (fresh) this.opts.log.error({ policy: this.path, kept_hash: this.active.hash, err: (err as Error).message }, `${why}; keeping the last good policy`);
      this.lastError = why;
      this.rejectedHash = undefined;
      if (fresh) this.rejected(null, [why]);
      return 'rejected';
    }
  }

  private async reloadOnce(): Promise<'reloaded' | 'unchanged' | 'rejected'> {
    if (this.closed) return 'unchanged';
    const { log } = this.opts;
    this.statSignature = await this.signature();
    const read = await this.readSettled();
    if (read === undefined) return 'unchanged';
    if (!Buffer.isBuffer(read)) {
      const why = `cannot read the policy file: ${read.error.message}`;
      const fresh = this.lastError !== why;
      if (fresh) log.error({ policy: this.path, hash: this.active.hash }, `${why}; keeping the last good policy`);
      this.lastError = why;
      this.rejectedHash = undefined;
      if (fresh) this.rejected(null, [why]);
      return 'rejected';
    }
    const bytes = read;
    const hash = createHash('sha256').update(bytes).digest('hex');
    if (hash === this.active.hash) {
      this.lastError = null;
      this.rejectedHash = undefined;
      return 'unchanged';
    }
    if (hash === this.rejectedHash) return 'rejected';
    // Reloads run one after another (this.chain), so the policy in force and its sections are still the
    // ones this file is checked against when its parse ends, and a newer file's reload starts only after
    // this one is done: an older file's result never replaces a newer policy.
    const inThread = bytes.length >= (this.opts.parseThreadMinBytes ?? POLICY_THREAD_MIN_BYTES);
    const parsed = inThread ? await this.parser.parse(bytes, this.active.path) : { result: parsePolicy(bytes, this.active.path), parsedOn: 'event loop' as const };
    if (parsed === undefined || this.closed) return 'unchanged';
    const { result, parsedOn } = parsed;
    // The top-level keys come from the same parse: parsing the file a second time for them doubled the
    // time a reload held the event loop (~1 s per MB of YAML).
    const sections = result.ok ? result.sections : new Set<string>();
    const dropped = result.ok ? droppedSections(this.sections, sections, this.active.path) : [];
    if (!result.ok || dropped.length > 0) {
      this.rejectedHash = hash;
      const errors = [...dropped, ...result.issues.filter((i) => i.severity === 'error')].map(formatIssue);
      const warnings = result.issues.filter((i) => i.severity === 'warning').map(formatIssue);
      this.lastError = errors.join('\n');
      log.error({ policy: this.path, rejected_hash: hash, kept_hash: this.active.hash, errors, parsed_on: parsedOn }, 'policy file rejected; keeping the last good policy');
      this.rejected(hash, errors, warnings);
      return 'rejected';
    }
    const previousHash = this.active.hash;
    this.active = result.policy;
    this.sections = sections;
    this.lastError = null;
    this.lastRejected = null;
    this.rejectedHash = undefined;
    this.auditedRejections.clear();
    for (const w of result.policy.warnings) log.warn({ policy: this.path }, `policy: ${formatIssue(w)}`);
    log.info({ policy: this.path, hash, previous_hash: previousHash, parsed_on: parsedOn }, 'policy reloaded');
    const event: PolicyReloadEvent = { hash, previousHash, path: this.active.path, policy: result.policy };
    for (const listener of this.listeners) {
      try {
        await listener(event);
      } catch (err) {
        log.error({ err: (err as Error).message, policy: this.path }, 'policy reload listener failed');
      }
    }
    return 'reloaded';
  }
}
