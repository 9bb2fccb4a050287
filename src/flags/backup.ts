import { mkdir, readFile, rename, stat, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { ClientFeaturesResponse } from 'unleash-client';
import type { StorageProvider } from 'unleash-client/lib/repository/storage-provider.js';
import { dataHash, type SharedFlagBackup } from './shared-backup.js';

// The last flags fetched from Unleash, kept on disk so a restart while Unleash is down can still start
// with the operators' last settings. A backup older than UNLEASH_BACKUP_MAX_AGE_S does not count: then
// the control plane starts not ready and denies every decision until Unleash answers (fail closed).
// The age is the time since Unleash last confirmed this content (a 304 counts), which is the file's
// modification time: it is touched on every confirmation, at most every few seconds.
//
// Every replica that fetches from Unleash also shares the same content in Redis (shared-backup.ts), with
// the time Unleash last confirmed it. A start uses whichever of the file and the Redis copy Unleash
// confirmed later: a replica restarted while Unleash is unreachable then starts from what the other
// replicas last knew (a flag turned off since its file was written), not from its own older file. A copy
// that cannot be read, or is of another environment, or whose age cannot be told, is never preferred.

export type BackupState = 'none' | 'loaded' | 'too-old' | 'other-source' | 'unreadable' | 'disabled';
/** Where the backup in use (or, when too old, the freshest found) came from. */
export type BackupFrom = 'file' | 'redis';

interface BackupFile {
  url: string;
  environment: string;
  data: ClientFeaturesResponse;
}

interface Candidate {
  from: BackupFrom;
  ageMs: number;
  body: string;
  file: BackupFile;
}

const TOUCH_EVERY_MS = 5_000;

export class FlagBackup implements StorageProvider<ClientFeaturesResponse> {
  readonly path: string;
  state: BackupState = 'none';
  /** Age of the backup at load time (seconds), when there was one. */
  ageS: number | undefined;
  /** Which copy `state` and `ageS` are about: the file in DATA_DIR or the Redis copy; undefined when there was none. */
  from: BackupFrom | undefined;
  private lastTouch = 0;
  /** The last content fetched from Unleash (JSON of BackupFile) and its hash, for the Redis copy. */
  private last: { body: string; hash: string } | undefined;
  private sharedFailing = false;
  private writing: Promise<void> = Promise.resolve();
  private readonly checkedDeferred: { promise: Promise<void>; resolve: () => void };

  constructor(
    dir: string,
    private readonly source: { url: string; environment: string; appName: string },
    private readonly maxAgeS: number,
    private readonly warn: (msg: string, fields?: Record<string, unknown>) => void,
    private readonly shared?: SharedFlagBackup,
  ) {
    const safe = `${source.appName}-${source.environment}`.replace(/[^A-Za-z0-9._-]/g, '_');
    this.path = join(dir, `unleash-backup-${safe}.json`);
    let resolve!: () => void;
    const promise = new Promise<void>((r) => {
      resolve = r;
    });
    this.checkedDeferred = { promise, resolve };
  }

  /** Resolves once the client has asked for the backup (whatever the outcome). */
  get checked(): Promise<void> {
    return this.checkedDeferred.promise;
  }

  async get(_key: string): Promise<ClientFeaturesResponse | undefined> {
    try {
      return await this.load();
    } finally {
      this.checkedDeferred.resolve();
    }
  }

  private async load(): Promise<ClientFeaturesResponse | undefined> {
    if (this.maxAgeS <= 0) {
      this.state = 'disabled';
      return undefined;
    }
    const [file, redis] = await Promise.all([this.readFileCopy(), this.readRedisCopy()]);
    const found = [file, redis].filter((c): c is Candidate => c !== undefined);
    if (found.length === 0) return undefined; // state: what the file check found (none, unreadable, other-source)
    // The one Unleash confirmed last; on a tie the file (nothing to gain from the other).
    const best = found.reduce((a, b) => (b.ageMs < a.ageMs ? b : a));
    this.from = best.from;
    this.ageS = Math.max(0, Math.round(best.ageMs / 1000));
    if (this.ageS > this.maxAgeS) {
      this.state = 'too-old';
      this.warn('flag backup is older than UNLEASH_BACKUP_MAX_AGE_S; not used', { path: this.path, from: best.from, age_s: this.ageS, max_age_s: this.maxAgeS });
      return undefined;
    }
    this.state = 'loaded';
    if (best.from === 'redis') {
      this.warn('flag backup: starting from the copy in Redis, which Unleash confirmed later than this replica\'s file', {
        path: this.path,
        age_s: this.ageS,
        file_age_s: file ? Math.round(file.ageMs / 1000) : null,
      });
      // Kept on disk with the time Unleash confirmed it: a restart without Redis then does not go back to the older file.
      this.writeFileCopy(best.body, Date.now() - best.ageMs);
    }
    return best.file.data;
  }

  private async readFileCopy(): Promise<Candidate | undefined> {
    let text: string;
    let mtimeMs: number;
    try {
      [text, mtimeMs] = await Promise.all([readFile(this.path, 'utf8'), stat(this.path).then((s) => s.mtimeMs)]);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
        this.state = 'unreadable';
        this.from = 'file';
        this.warn('flag backup unreadable; not used', { path: this.path, err: (err as Error).message });
      }
      return undefined;
    }
    const file = this.parse(text);
    if (file === 'invalid') {
      this.state = 'unreadable';
      this.from = 'file';
      this.warn('flag backup is not valid JSON; not used', { path: this.path });
      return undefined;
    }
    if (file === 'other-source') {
      this.state = 'other-source';
      this.from = 'file';
      this.warn('flag backup was written for another Unleash environment; not used', { path: this.path });
      return undefined;
    }
    return { from: 'file', ageMs: Math.max(0, Date.now() - mtimeMs), body: text, file };
  }

  private async readRedisCopy(): Promise<Candidate | undefined> {
    if (!this.shared) return undefined;
    let copy: { body: string; ageMs: number } | undefined;
    try {
      copy = await this.shared.get();
    } catch (err) {
      this.warn('flag backup: the copy in Redis cannot be read; using the file alone', { key: this.shared.key, err: (err as Error).message });
      return undefined;
    }
    if (!copy) return undefined;
    // Negative: Redis's clock went back since it was written; its age cannot be told, so it is not used.
    if (!Number.isFinite(copy.ageMs) || copy.ageMs < 0) {
      this.warn('flag backup: the copy in Redis has no age that can be trusted; not used', { key: this.shared.key, age_ms: copy.ageMs });
      return undefined;
    }
    const file = this.parse(copy.body);
    if (file === 'invalid' || file === 'other-source') {
      this.warn(`flag backup: the copy in Redis is ${file === 'invalid' ? 'not valid JSON' : 'for another Unleash environment'}; not used`, { key: this.shared.key });
      return undefined;
    }
    return { from: 'redis', ageMs: copy.ageMs, body: copy.body, file };
  }

  private parse(text: string): BackupFile | 'invalid' | 'other-source' {
    let file: BackupFile;
    try {
      file = JSON.parse(text) as BackupFile;
    } catch {
      return 'invalid';
    }
    // The URL may legitimately change (a proxy, Unleash Edge); the environment may not.
    if (file?.environment !== this.source.environment || !Array.isArray(file.data?.features)) return 'other-source';
    return file;
  }

  private writeFileCopy(body: string, confirmedAtMs?: number): void {
    this.writing = this.writing.then(async () => {
      try {
        await mkdir(join(this.path, '..'), { recursive: true, mode: 0o700 });
        const tmp = `${this.path}.${process.pid}.tmp`;
        await writeFile(tmp, body);
        if (confirmedAtMs !== undefined) await utimes(tmp, new Date(confirmedAtMs), new Date(confirmedAtMs));
        await rename(tmp, this.path);
        if (confirmedAtMs === undefined) this.lastTouch = Date.now();
      } catch (err) {
        this.warn('could not write the flag backup', { path: this.path, err: (err as Error).message });
      }
    });
  }

  /** Called by unleash-client with every changed payload it fetched from Unleash. */
  async set(_key: string, data: ClientFeaturesResponse): Promise<void> {
    const fetchedAt = Date.now();
    const body = JSON.stringify({ url: this.source.url, environment: this.source.environment, data } satisfies BackupFile);
    this.last = { body, hash: dataHash(JSON.stringify(data)) };
    this.writeFileCopy(body);
    const last = this.last;
    this.writing = this.writing.then(() => this.share(last, fetchedAt, true));
    await this.writing;
  }

  /** Unleash confirmed the content (304): the backup is as fresh as now. */
  confirm(): void {
    const now = Date.now();
    if (now - this.lastTouch < TOUCH_EVERY_MS) return;
    this.lastTouch = now;
    const t = new Date(now);
    if (this.state !== 'disabled') this.writing = this.writing.then(() => utimes(this.path, t, t).catch(() => {}));
    const last = this.last;
    if (last) this.writing = this.writing.then(() => this.share(last, now, false));
  }

  private async share(last: { body: string; hash: string }, confirmedAt: number, withBody: boolean): Promise<void> {
    if (!this.shared) return;
    try {
      // Without the body first: a confirmation of the data Redis holds already is a few bytes.
      const done = await this.shared.put(last.hash, Date.now() - confirmedAt, withBody ? last.body : undefined);
      if (!done) await this.shared.put(last.hash, Date.now() - confirmedAt, last.body);
      if (this.sharedFailing) this.warn('flag backup: the copy in Redis is written again');
      this.sharedFailing = false;
    } catch (err) {
      if (!this.sharedFailing) this.warn('flag backup: cannot write the copy in Redis (other replicas starting without Unleash may start from older flags)', { key: this.shared.key, err: (err as Error).message });
      this.sharedFailing = true;
    }
  }

  async flush(): Promise<void> {
    await this.writing;
  }
}
