import { mkdir, open, rename, stat, unlink } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';

// The owner key generated at the first start is shown to the human who started the control plane, and
// must not reach the log: a service's stdout and stderr are what log shippers (docker logs, journald,
// Kubernetes) collect and keep. So it goes to a file in DATA_DIR that only this user can read, and the
// log (JSON, like every other line) says where. docs/operations.md, "First start: the owner key".

export const OWNER_KEY_FILE = 'owner-key';

interface Log {
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

export function ownerKeyPath(dataDir: string): string {
  return resolve(dataDir, OWNER_KEY_FILE);
}

/** Writes the key to DATA_DIR/owner-key (mode 0600) and logs where. Returns the path, or undefined when it could not be written (logged). */
export async function leaveOwnerKey(key: string, dataDir: string, log: Log): Promise<string | undefined> {
  const path = ownerKeyPath(dataDir);
  const tmp = `${path}.${process.pid}.tmp`;
  try {
    await mkdir(dirname(path), { recursive: true });
    // A leftover of a crashed start (PID 1 again in a container) would keep its mode: 0600 applies only to a new file.
    await unlink(tmp).catch(() => {});
    const file = await open(tmp, 'wx', 0o600);
    try {
      await file.writeFile(`${key}\n`);
      await file.sync();
    } finally {
      await file.close();
    }
    // Replaces the key file of an earlier installation whose database was emptied: that key is gone with it.
    await rename(tmp, path);
  } catch (err) {
    await unlink(tmp).catch(() => {});
    log.error(
      { err: (err as Error).message, path },
      'first start: created an owner operator key but could not write it to DATA_DIR, and it is shown nowhere else; make another with `killswitch operators create --role owner --name NAME` (direct database access)',
    );
    return undefined;
  }
  log.warn(
    { path },
    `first start: created an owner operator key and wrote it to ${path}, readable by this user only. Read it once (cat ${path}, inside the container if it runs in one), keep it somewhere safe, then delete the file. It is not printed to the log.`,
  );
  return path;
}

/** At a later start: a key file still there is a standing owner credential on disk; say so. */
export async function warnIfOwnerKeyLeft(dataDir: string, log: Log): Promise<void> {
  const path = ownerKeyPath(dataDir);
  const found = await stat(path).then(
    () => true,
    () => false,
  );
  if (found) log.warn({ path }, `the owner operator key of the first start is still in ${path}: once it is kept somewhere safe, delete the file`);
}
