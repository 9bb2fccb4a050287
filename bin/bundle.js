// The sources bundled once with esbuild, so that each `killswitch` process loads a few files instead of
// ~800 TypeScript modules through tsx's loader (a break-glass `killswitch kill` starts in ~0.2 s instead of
// ~0.5 s; `policy check` and `start` use less than half the CPU: docs/adr/0027-bundled-cli.md).
//
// No build step to remember: the bundle is keyed by the sources' paths, sizes and modification times, so
// an edited file gives a new key and the next start builds again (~0.7 s). A build goes to a directory of
// its own and is renamed into place when complete, so processes starting together never load half of one.
// When no bundle can be had (a read-only install that was never built, esbuild missing), the caller runs the
// sources through tsx as before: the same code, only slower to start.
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, renameSync, rmSync, statSync } from 'node:fs';
import { basename, dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const SRC = join(ROOT, 'src');
/**
 * `<root>/.bundle/<key>/`: two levels below the root, like `src/<dir>/`, so that the `../../…` paths the
 * sources resolve from `import.meta.url` (migrations, flags, ui/dist, package.json) still point at the root.
 */
export const BUNDLES = join(ROOT, '.bundle');
/** Change it when the build options below change: every existing bundle is then out of date. */
const FORMAT = 'esm-splitting-keepnames-workers-2';
/** Bundles of other keys (older sources) are removed once this old; a process started from one may still load its chunks. */
const KEEP_OLD_MS = 24 * 3600_000;

function sourceFiles() {
  const files = [];
  for (const entry of readdirSync(SRC, { recursive: true, withFileTypes: true })) {
    if (entry.isFile()) files.push(join(entry.parentPath, entry.name));
  }
  return files;
}

/**
 * What esbuild bundles, by output name: src/cli/main.ts as `main`, and each worker thread's entry
 * (`src/<dir>/<name>.worker.ts`) as `<name>.worker`, beside it and the shared chunks, where the code that
 * starts it finds it (`new URL('./<name>.worker.js', import.meta.url)`, e.g. src/policy/parse-thread.ts).
 */
export function entryPoints(files = sourceFiles()) {
  const entries = { main: join(SRC, 'cli', 'main.ts') };
  for (const file of files) {
    if (!file.endsWith('.worker.ts')) continue;
    const name = basename(file, '.ts');
    if (name in entries) throw new Error(`two worker entries would both be bundled as ${name}.js: ${relative(ROOT, entries[name])} and ${relative(ROOT, file)}`);
    entries[name] = file;
  }
  return entries;
}

/** The key of the sources as they are now: every file under src/ and tsconfig.json (esbuild reads it). */
export function sourceKey() {
  const hash = createHash('sha256').update(FORMAT);
  const files = [join(ROOT, 'tsconfig.json'), ...sourceFiles()];
  files.sort();
  for (const file of files) {
    const st = statSync(file);
    hash.update(`\0${relative(ROOT, file)}\0${st.size}\0${st.mtimeMs}`);
  }
  return hash.digest('hex').slice(0, 16);
}

/**
 * The bundle's entry (src/cli/main.ts bundled) for the sources as they are, built if needed; undefined
 * when KILLSWITCH_BUNDLE=0 or when it cannot be built (`required`, or KILLSWITCH_BUNDLE=1, makes that an
 * error instead).
 */
export async function bundledEntry(required = process.env.KILLSWITCH_BUNDLE === '1') {
  if (process.env.KILLSWITCH_BUNDLE === '0') return undefined;
  try {
    const key = sourceKey();
    const dir = join(BUNDLES, key);
    const entry = join(dir, 'main.js');
    if (existsSync(entry)) return entry;
    const tmp = `${dir}.tmp-${process.pid}-${Date.now()}`;
    const esbuild = await import('esbuild');
    try {
      await esbuild.build({
        entryPoints: entryPoints(),
        outdir: tmp,
        bundle: true,
        splitting: true,
        format: 'esm',
        platform: 'node',
        target: 'node20',
        // node_modules are loaded as installed; only our sources are bundled.
        packages: 'external',
        // Class and function names stay as written (error names, log fields), as under tsx.
        keepNames: true,
        // Stack traces name the .ts file and line (bin/killswitch.js enables source maps).
        sourcemap: true,
        tsconfig: join(ROOT, 'tsconfig.json'),
        logLevel: 'silent',
      });
      renameSync(tmp, dir);
    } catch (err) {
      rmSync(tmp, { recursive: true, force: true });
      // Another process renamed the same build into place first: use it.
      if (!existsSync(entry)) throw err;
    } finally {
      // esbuild's service child (~76 MB) would otherwise live as long as the process: a control plane
      // started right after a change of its sources kept it for its whole life.
      await esbuild.stop();
    }
    prune(key);
    return entry;
  } catch (err) {
    if (required) throw err;
    return undefined;
  }
}

/** Removes bundles of other keys and unfinished builds older than KEEP_OLD_MS. */
function prune(current) {
  const now = Date.now();
  for (const name of readdirSync(BUNDLES)) {
    if (name === current) continue;
    const path = join(BUNDLES, name);
    try {
      if (now - statSync(path).mtimeMs > KEEP_OLD_MS) rmSync(path, { recursive: true, force: true });
    } catch {
      // Removed by another process meanwhile.
    }
  }
}
