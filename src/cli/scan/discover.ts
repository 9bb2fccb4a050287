import { readdir, realpath, stat } from 'node:fs/promises';
import { basename, join, resolve } from 'node:path';
import { fileKindOf, type Location, SKIPPED_DIRECTORIES } from './locations.js';
import type { FileKind, InputError } from './schema.js';

// Finds the files a scan reads: paths given (a file is read whatever its name; a directory is walked
// for client configs and package.json files) and, when asked, the user-level client configs that
// exist. Symbolic links are not followed inside a walk (no loops, no escaping the tree).

export interface DiscoverOptions {
  paths: readonly string[];
  /** User-level configs to read when they exist. */
  userLocations: readonly Location[];
  cwd: string;
  maxDepth: number;
}

export interface Discovered {
  files: Location[];
  /** Given paths that do not exist or cannot be read: bad input. */
  errors: InputError[];
  /** Folders a walk could not enter: reported, not fatal. */
  warnings: string[];
}

export async function discoverFiles(o: DiscoverOptions): Promise<Discovered> {
  const out: Discovered = { files: [], errors: [], warnings: [] };
  const seen = new Set<string>();
  const add = async (path: string, kind: FileKind) => {
    const key = await realpath(path).catch(() => path);
    if (seen.has(key)) return;
    seen.add(key);
    out.files.push({ path, kind });
  };

  const walk = async (dir: string, depth: number): Promise<void> => {
    let entries: import('node:fs').Dirent[];
    try {
      entries = await readdir(dir, { withFileTypes: true });
    } catch (err) {
      out.warnings.push(`${dir}: cannot read the folder (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}); skipped`);
      return;
    }
    entries.sort((a, b) => a.name.localeCompare(b.name));
    for (const e of entries) {
      const path = join(dir, e.name);
      if (e.isFile()) {
        const kind = fileKindOf(path);
        if (kind) await add(path, kind);
      } else if (e.isDirectory() && depth < o.maxDepth && !SKIPPED_DIRECTORIES.has(e.name)) {
        await walk(path, depth + 1);
      }
    }
  };

  for (const given of o.paths) {
    const path = resolve(o.cwd, given);
    let info: import('node:fs').Stats;
    try {
      info = await stat(path);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      out.errors.push({ file: given, line: 1, column: 1, message: code === 'ENOENT' ? 'no such file or directory' : `cannot read: ${code ?? (err as Error).message}` });
      continue;
    }
    if (info.isDirectory()) await walk(path, 0);
    else await add(path, fileKindOf(path) ?? (basename(path) === 'package.json' ? 'package_json' : 'mcp_json'));
  }

  for (const loc of o.userLocations) {
    const info = await stat(loc.path).catch(() => undefined);
    if (info?.isFile()) await add(loc.path, loc.kind);
  }
  return out;
}
