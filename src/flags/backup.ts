import { mkdir, readFile, rename, stat, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { ClientFeaturesResponse } from 'unleash-client';
import type { StorageProvider } from 'unleash-client/lib/repository/storage-provider.js';

// The last flags fetched from Unleash, kept on disk so a restart while Unleash is down can still start
// with the operators' last settings. A backup older than UNLEASH_BACKUP_MAX_AGE_S does not count: then
// the control plane starts not ready and denies every decision until Unleash answers (fail closed).
// The age is the time since Unleash last confirmed this content (a 304 counts), which is the file's
// modification time: it is touched on every confirmation, at most every few seconds.

export type BackupState = 'none' | 'loaded' | 'too-old' | 'other-source' | 'unreadable' | 'disabled';

interface BackupFile {
  url: string;
  environment: string;
  data: ClientFeaturesResponse;
}

const TOUCH_EVERY_MS = 5_000;

export class FlagBackup implements StorageProvider<ClientFeaturesResponse> {
  readonly path: string;
  state: BackupState = 'none';
  /** Age of the backup at load time (seconds), when there was one. */
  ageS: number | undefined;
  private lastTouch = 0;
  private writing: Promise<void> = Promise.resolve();
  private readonly checkedDeferred: { promise: Promise<void>; resolve: () => void };

  constructor(
    dir: string,
    private readonly source: { url: string; environment: string; appName: string },
    private readonly maxAgeS: number,
    private readonly warn: (msg: string, fields?: Record<string, unknown>) => void,
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
    let text: string;
    let mtimeMs: number;
    try {
      [text, mtimeMs] = await Promise.all([readFile(this.path, 'utf8'), stat(this.path).then((s) => s.mtimeMs)]);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
        this.state = 'unreadable';
        this.warn('flag backup unreadable; not used', { path: this.path, err: (err as Error).message });
      }
      return undefined;
    }
    this.ageS = Math.max(0, Math.round((Date.now() - mtimeMs) / 1000));
    if (this.ageS > this.maxAgeS) {
      this.state = 'too-old';
      this.warn('flag backup is older than UNLEASH_BACKUP_MAX_AGE_S; not used', { path: this.path, age_s: this.ageS, max_age_s: this.maxAgeS });
      return undefined;
    }
    let file: BackupFile;
    try {
      file = JSON.parse(text) as BackupFile;
    } catch {
      this.state = 'unreadable';
      this.warn('flag backup is not valid JSON; not used', { path: this.path });
      return undefined;
    }
    // The URL may legitimately change (a proxy, Unleash Edge); the environment may not.
    if (file.environment !== this.source.environment || !Array.isArray(file.data?.features)) {
      this.state = 'other-source';
      this.warn('flag backup was written for another Unleash environment; not used', { path: this.path, url: file.url });
      return undefined;
    }
    this.state = 'loaded';
    return file.data;
  }

  async set(_key: string, data: ClientFeaturesResponse): Promise<void> {
    const body: BackupFile = { url: this.source.url, environment: this.source.environment, data };
    this.writing = this.writing.then(async () => {
      try {
        await mkdir(join(this.path, '..'), { recursive: true });
        const tmp = `${this.path}.${process.pid}.tmp`;
        await writeFile(tmp, JSON.stringify(body));
        await rename(tmp, this.path);
        this.lastTouch = Date.now();
      } catch (err) {
        this.warn('could not write the flag backup', { path: this.path, err: (err as Error).message });
      }
    });
    await this.writing;
  }

  /** Unleash confirmed the content (304): the backup is as fresh as now. */
  confirm(): void {
    const now = Date.now();
    if (now - this.lastTouch < TOUCH_EVERY_MS || this.state === 'disabled') return;
    this.lastTouch = now;
    const t = new Date(now);
    this.writing = this.writing.then(() => utimes(this.path, t, t).catch(() => {}));
  }

  async flush(): Promise<void> {
    await this.writing;
  }
}
