import { mkdir, open, readdir, readFile, rename, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { lock, touchLock, unlock } from '../audit/spool.js';

// This replica's disk copy of the halts Postgres did not take (the Redis journal `halts:unrecorded` is
// the other copy). A halt the gate fired while Postgres was unreachable lives only in Redis until it is
// recorded: losing Redis then (a restart without persistence, a flush) would lift it, since the reload
// copies Postgres, which never got it. So it is also appended here, fsynced, before halt() returns, and
// this replica records it in Postgres before any reload of Redis sets the state epoch (epoch.ts
// `beforeReload`), and on every tick until Postgres takes it.
//
// One file per database and process ("slot"), locked as the audit spool's are (same lock files, lease and
// staleness rules: src/audit/spool.ts), so WORKERS processes sharing DATA_DIR never write or replay the
// same file; the files of a process that died are adopted by the next one that looks (at start and
// every ADOPT_EVERY_MS). Halts are rare: each append opens, writes, syncs and closes, and removing
// recorded entries rewrites the file (write, sync, rename).

const MAX_SLOTS = 64;
const ADOPT_EVERY_MS = 10_000;

/** A halt as journaled: its `id` names the entry in the file. */
export interface JournaledHalt {
  id: string;
  [field: string]: unknown;
}

export function haltJournalBaseName(database: string): string {
  return `halt-journal.${database.replace(/[^A-Za-z0-9_-]/g, '_') || 'default'}`;
}

const slotPath = (dir: string, base: string, slot: number) => join(dir, slot === 0 ? `${base}.jsonl` : `${base}.${slot}.jsonl`);

interface HeldFile {
  path: string;
  toucher: NodeJS.Timeout;
  entries: JournaledHalt[];
}

export class HaltJournal {
  private readonly adopted: HeldFile[] = [];
  private lastAdopt = 0;
  /** Appends, rewrites and adoptions one at a time: an append during a rewrite would land in the file the rename replaces. */
  private chain: Promise<unknown> = Promise.resolve();
  /** Lines that did not parse (a torn last line: never acknowledged), per file read. */
  unreadable = 0;

  private constructor(
    private readonly dir: string,
    private readonly base: string,
    private readonly own: HeldFile,
  ) {}

  /** Takes the first free slot (what an earlier run of it left is pending here) and adopts orphaned files. */
  static async open(dir: string, database: string): Promise<HaltJournal> {
    // Entries carry halt summaries (masked call arguments): only the control plane's user reads them.
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const base = haltJournalBaseName(database);
    for (let slot = 0; slot < MAX_SLOTS; slot++) {
      const path = slotPath(dir, base, slot);
      if (!(await lock(path))) continue;
      const journal = new HaltJournal(dir, base, { path, toucher: touchLock(path), entries: [] });
      const unreadableBefore = journal.unreadable;
      journal.own.entries = await journal.read(path);
      // A torn last line (a crash mid-append) would swallow the next entry appended after it.
      if (journal.unreadable > unreadableBefore) await journal.rewrite(path, journal.own.entries);
      await journal.adoptOrphans(true);
      return journal;
    }
    throw new Error(`no free halt journal slot in ${dir}`);
  }

  /** Every entry not yet removed: this process's and those of dead processes it adopted, oldest file first. */
  get entries(): JournaledHalt[] {
    return [...this.adopted.flatMap((f) => f.entries), ...this.own.entries];
  }

  get size(): number {
    return this.own.entries.length + this.adopted.reduce((n, f) => n + f.entries.length, 0);
  }

  /** Appends the entry and syncs it to disk; throws when the disk does not take it. */
  append(entry: JournaledHalt): Promise<void> {
    return this.serial(async () => {
      const handle = await open(this.own.path, 'a', 0o600);
      try {
        const { size } = await handle.stat();
        try {
          await handle.appendFile(`${JSON.stringify(entry)}\n`, 'utf8');
          await handle.datasync();
        } catch (err) {
          // No torn line for the next entry to be glued to.
          await handle.truncate(size).catch(() => {});
          throw err;
        }
      } finally {
        await handle.close();
      }
      this.own.entries.push(entry);
    });
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.chain.then(fn, fn);
    this.chain = next.catch(() => {});
    return next;
  }

  /** Removes entries (recorded in Postgres, or unreadable); files of dead processes left empty are deleted. */
  remove(ids: ReadonlySet<string>): Promise<void> {
    return this.serial(() => this.removeNow(ids));
  }

  private async removeNow(ids: ReadonlySet<string>): Promise<void> {
    for (const file of [...this.adopted, this.own]) {
      const kept = file.entries.filter((e) => !ids.has(e.id));
      if (kept.length === file.entries.length) continue;
      await this.rewrite(file.path, kept);
      file.entries = kept;
    }
    for (const file of this.adopted.filter((f) => f.entries.length === 0)) {
      this.adopted.splice(this.adopted.indexOf(file), 1);
      clearInterval(file.toucher);
      await unlink(file.path).catch(() => {});
      await unlock(file.path);
    }
  }

  /** Takes over the files of processes that are gone (their lock is stale), at most every ADOPT_EVERY_MS. */
  adoptOrphans(force = false): Promise<number> {
    if (!force && Date.now() - this.lastAdopt < ADOPT_EVERY_MS) return Promise.resolve(0);
    return this.serial(() => this.adoptNow());
  }

  private async adoptNow(): Promise<number> {
    this.lastAdopt = Date.now();
    const pattern = new RegExp(`^${this.base.replace(/[.]/g, '\\.')}(\\.\\d+)?\\.jsonl$`);
    const names = (await readdir(this.dir).catch(() => [] as string[])).filter((n) => pattern.test(n)).sort();
    let found = 0;
    for (const name of names) {
      const path = join(this.dir, name);
      if (path === this.own.path || this.adopted.some((f) => f.path === path)) continue;
      if (!(await lock(path))) continue;
      const entries = await this.read(path);
      if (entries.length === 0) {
        await unlink(path).catch(() => {});
        await unlock(path);
        continue;
      }
      this.adopted.push({ path, toucher: touchLock(path), entries });
      found += entries.length;
    }
    return found;
  }

  /** Drops the locks; files that still hold entries stay for the next process (or the next start). */
  release(): Promise<void> {
    return this.serial(() => this.releaseNow());
  }

  private async releaseNow(): Promise<void> {
    for (const file of [...this.adopted.splice(0), this.own]) {
      clearInterval(file.toucher);
      if (file.entries.length === 0) await unlink(file.path).catch(() => {});
      await unlock(file.path);
    }
  }

  private async read(path: string): Promise<JournaledHalt[]> {
    const text = await readFile(path, 'utf8').catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return '';
      throw err;
    });
    const out: JournaledHalt[] = [];
    for (const line of text.split('\n')) {
      if (!line) continue;
      try {
        const e = JSON.parse(line) as JournaledHalt;
        if (typeof e?.id === 'string') out.push(e);
        else this.unreadable++;
      } catch {
        this.unreadable++;
      }
    }
    return out;
  }

  private async rewrite(path: string, entries: JournaledHalt[]): Promise<void> {
    const tmp = `${path}.tmp`;
    const handle = await open(tmp, 'w', 0o600);
    try {
      await handle.writeFile(entries.map((e) => `${JSON.stringify(e)}\n`).join(''), 'utf8');
      await handle.datasync();
    } finally {
      await handle.close();
    }
    await rename(tmp, path);
    const d = await open(this.dir, 'r');
    await d.sync().catch(() => {});
    await d.close();
  }
}
