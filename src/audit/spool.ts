import { type FileHandle, mkdir, open, readdir, readFile, rename, stat, unlink, utimes, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import type { AuditRecord } from './record.js';

// The local append-only spool: audit rows that could not reach Postgres, one JSON line each, fsynced
// before the caller is told they are durable. One file per database and writer ("slot"), guarded by a
// lock file holding the owner's pid and host (touched while held: a lease for writers on other hosts),
// so two writers sharing DATA_DIR never interleave or replay each other's rows twice. Files of writers that died are adopted and replayed by the next writer.

const HELD = new Set<string>();
const READ_CHUNK = 1 << 20;
const MAX_SLOTS = 64;
/** A held lock file is touched this often; one untouched for LOCK_LEASE_MS belongs to a writer that is gone. */
const LOCK_TOUCH_MS = 5_000;
export const LOCK_LEASE_MS = 30_000;
const HOST = hostname();

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Whether the lock file's owner is gone. It holds "pid host". On this host, the pid tells (our own pid
 * but not held in this process: an earlier run that had the same pid, as PID 1 in a container). A lock
 * of another host (a DATA_DIR shared between containers, where pids mean nothing) is stale only when its
 * owner stopped touching it for LOCK_LEASE_MS.
 */
async function isStale(lockPath: string): Promise<boolean> {
  const [pidText = '', host] = (await readFile(lockPath, 'utf8').catch(() => '')).trim().split(/\s+/);
  const pid = Number(pidText);
  if (!Number.isInteger(pid) || pid <= 0) return true;
  if (host === undefined || host === HOST) return pid === process.pid ? true : !isAlive(pid);
  const touched = await stat(lockPath).then(
    (st) => st.mtimeMs,
    () => 0,
  );
  return Date.now() - touched > LOCK_LEASE_MS;
}

/**
 * Takes the lock next to `path`; false when a live writer holds it. Also used by the halt journal
 * (src/sessions/halt-journal.ts), whose files live in DATA_DIR beside the spool's.
 */
export async function lock(path: string): Promise<boolean> {
  const lockPath = `${path}.lock`;
  if (HELD.has(lockPath)) return false;
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      await writeFile(lockPath, `${process.pid} ${HOST}\n`, { flag: 'wx' });
      HELD.add(lockPath);
      return true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      if (!(await isStale(lockPath))) return false;
      await unlink(lockPath).catch(() => {});
    }
  }
  return false;
}

/** Drops a lock this process took with lock(). */
export async function unlock(path: string): Promise<void> {
  HELD.delete(`${path}.lock`);
  await unlink(`${path}.lock`).catch(() => {});
}

/** Keeps a held lock's lease fresh for writers on other hosts sharing DATA_DIR (see isStale); clear the returned timer on release. */
export function touchLock(path: string): NodeJS.Timeout {
  const timer = setInterval(() => {
    const now = new Date();
    void utimes(`${path}.lock`, now, now).catch(() => {});
  }, LOCK_TOUCH_MS);
  timer.unref();
  return timer;
}

export function spoolBaseName(database: string): string {
  return `audit-spool.${database.replace(/[^A-Za-z0-9_-]/g, '_') || 'default'}`;
}

function slotPath(dir: string, base: string, slot: number): string {
  return join(dir, slot === 0 ? `${base}.jsonl` : `${base}.${slot}.jsonl`);
}

export class Spool {
  private bytes = 0;
  /** Rows appended and not yet replayed. */
  pendingRows = 0;
  /** Byte offset up to which rows were replayed into Postgres. */
  replayedTo = 0;

  private readonly toucher: NodeJS.Timeout;

  private constructor(
    readonly path: string,
    private readonly handle: FileHandle,
  ) {
    // The lease other hosts sharing DATA_DIR go by (see isStale).
    this.toucher = setInterval(() => {
      const now = new Date();
      void utimes(`${path}.lock`, now, now).catch(() => {});
    }, LOCK_TOUCH_MS);
    this.toucher.unref();
  }

  /** Opens the first free slot for this database in dir (creating dir). Throws when dir is unusable. */
  static async acquire(dir: string, database: string): Promise<Spool> {
    // Spooled rows carry (masked) call arguments: only the control plane's user reads them.
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const base = spoolBaseName(database);
    for (let slot = 0; slot < MAX_SLOTS; slot++) {
      const path = slotPath(dir, base, slot);
      if (await lock(path)) return Spool.openLocked(path, dir);
    }
    throw new Error(`no free audit spool slot in ${dir}`);
  }

  /** Spool files of this database left by writers that are gone, locked for replay by the caller. */
  static async adoptOrphans(dir: string, database: string): Promise<Spool[]> {
    const base = spoolBaseName(database);
    const pattern = new RegExp(`^${base.replace(/[.]/g, '\\.')}(\\.\\d+)?\\.jsonl$`);
    let names: string[];
    try {
      names = (await readdir(dir)).filter((n) => pattern.test(n)).sort();
    } catch {
      return [];
    }
    const adopted: Spool[] = [];
    for (const name of names) {
      const path = join(dir, name);
      if (!(await lock(path))) continue;
      const spool = await Spool.openLocked(path, dir);
      if (spool.pendingRows > 0) adopted.push(spool);
      else await spool.release(true);
    }
    return adopted;
  }

  private static async openLocked(path: string, dir: string): Promise<Spool> {
    let handle: FileHandle | undefined;
    let spool: Spool | undefined;
    try {
      handle = await open(path, 'a+', 0o600);
      // A file an earlier version created readable by everyone (0644) is narrowed too.
      await handle.chmod(0o600).catch(() => {});
      spool = new Spool(path, handle);
      await spool.recover();
      // The directory entry of a new file must be durable too.
      const d = await open(dir, 'r');
      await d.sync().catch(() => {});
      await d.close();
      return spool;
    } catch (err) {
      if (spool) clearInterval(spool.toucher);
      await handle?.close().catch(() => {});
      HELD.delete(`${path}.lock`);
      await unlink(`${path}.lock`).catch(() => {});
      throw err;
    }
  }

  /** Drops a torn last line (a crash mid-append: never acknowledged) and counts the pending rows. */
  private async recover(): Promise<void> {
    const { size } = await this.handle.stat();
    this.bytes = size;
    if (size === 0) return;
    let lines = 0;
    let lastNewline = -1;
    const buf = Buffer.allocUnsafe(READ_CHUNK);
    for (let pos = 0; pos < size; ) {
      const { bytesRead } = await this.handle.read(buf, 0, Math.min(READ_CHUNK, size - pos), pos);
      if (bytesRead === 0) break;
      for (let i = 0; i < bytesRead; i++) {
        if (buf[i] === 10) {
          lines++;
          lastNewline = pos + i;
        }
      }
      pos += bytesRead;
    }
    if (lastNewline + 1 !== size) {
      await this.handle.truncate(lastNewline + 1);
      await this.handle.datasync();
      this.bytes = lastNewline + 1;
    }
    this.pendingRows = lines;
  }

  get sizeBytes(): number {
    return this.bytes;
  }

  /** Appends rows and fsyncs; on failure the file is cut back so no partial line remains. */
  async append(records: readonly AuditRecord[]): Promise<void> {
    const data = Buffer.from(records.map((r) => `${JSON.stringify(r)}\n`).join(''), 'utf8');
    const before = this.bytes;
    try {
      await this.handle.appendFile(data);
      await this.handle.datasync();
    } catch (err) {
      await this.handle.truncate(before).catch(() => {});
      throw err;
    }
    this.bytes = before + data.length;
    this.pendingRows += records.length;
  }

  /**
   * Reads up to maxRows complete rows starting at replayedTo. Lines that do not parse are returned in
   * `corrupt` (the caller keeps them with keepUnparsed before it counts them replayed: never silently dropped).
   */
  async readPending(maxRows: number): Promise<{ records: AuditRecord[]; corrupt: string[]; endOffset: number }> {
    const records: AuditRecord[] = [];
    const corrupt: string[] = [];
    let pos = this.replayedTo;
    let chunk = READ_CHUNK;
    while (records.length + corrupt.length < maxRows && pos < this.bytes) {
      const len = Math.min(chunk, this.bytes - pos);
      const buf = Buffer.allocUnsafe(len);
      const { bytesRead } = await this.handle.read(buf, 0, len, pos);
      const lastNewline = buf.lastIndexOf(10, bytesRead - 1);
      if (lastNewline < 0) {
        if (pos + bytesRead >= this.bytes) break;
        chunk *= 2;
        continue;
      }
      let start = 0;
      while (start <= lastNewline && records.length + corrupt.length < maxRows) {
        const end = buf.indexOf(10, start);
        const line = buf.toString('utf8', start, end);
        start = end + 1;
        if (!line) continue;
        try {
          const r = JSON.parse(line) as AuditRecord & { ts: string };
          records.push({ ...r, ts: new Date(r.ts) });
        } catch {
          corrupt.push(line);
        }
      }
      pos += start;
    }
    return { records, corrupt, endOffset: pos };
  }

  /**
   * Appends lines that do not parse to `<spool>.unparsed` beside the spool (fsynced) and returns its path:
   * the spool is emptied once replayed, and no writer adopts or replays that name, so they stay for forensics.
   */
  async keepUnparsed(lines: readonly string[]): Promise<string> {
    const to = `${this.path}.unparsed`;
    const f = await open(to, 'a', 0o600);
    try {
      await f.appendFile(lines.map((l) => `${l}\n`).join(''));
      await f.datasync();
    } finally {
      await f.close();
    }
    return to;
  }

  markReplayed(endOffset: number, rows: number): void {
    this.replayedTo = endOffset;
    this.pendingRows = Math.max(0, this.pendingRows - rows);
  }

  get fullyReplayed(): boolean {
    return this.replayedTo >= this.bytes;
  }

  /** Empties the file once every row is in Postgres. */
  async clear(): Promise<void> {
    await this.handle.truncate(0);
    await this.handle.datasync();
    this.bytes = 0;
    this.replayedTo = 0;
    this.pendingRows = 0;
  }

  /**
   * Renames the file out of the way (`<name>.set-aside-<time>`, which no writer adopts or replays), then
   * closes it and drops the lock. Returns the new path. The next acquire of this slot starts a new file.
   */
  async setAside(now = new Date()): Promise<string> {
    const to = `${this.path}.set-aside-${now.toISOString().replace(/[:.]/g, '-')}`;
    await rename(this.path, to);
    await this.release();
    return to;
  }

  /** Closes the file and drops the lock; removes the file when asked and it is empty. */
  async release(removeIfEmpty = false): Promise<void> {
    clearInterval(this.toucher);
    await this.handle.close().catch(() => {});
    if (removeIfEmpty && this.bytes === 0) await unlink(this.path).catch(() => {});
    HELD.delete(`${this.path}.lock`);
    await unlink(`${this.path}.lock`).catch(() => {});
  }
}
