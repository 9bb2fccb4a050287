import { execFile, spawn } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative, sep } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';

// bin/killswitch.js runs a bundle of the sources (bin/bundle.js), keyed by the sources' sizes and times,
// and falls back to tsx when it cannot have one. Each test builds a small project of its own with the real
// bin/ files and node_modules, so nothing here touches the repository's own .bundle/.

const ROOT = process.cwd();
const roots: string[] = [];
afterAll(() => {
  for (const r of roots) rmSync(r, { recursive: true, force: true });
});

/** A project with bin/killswitch.js, bin/bundle.js and a src/cli/main.ts that prints what it ran as. */
function project(): string {
  const root = mkdtempSync(join(tmpdir(), 'ks-bundle-'));
  roots.push(root);
  mkdirSync(join(root, 'bin'));
  for (const f of ['killswitch.js', 'bundle.js']) copyFileSync(join(ROOT, 'bin', f), join(root, 'bin', f));
  copyFileSync(join(ROOT, 'tsconfig.json'), join(root, 'tsconfig.json'));
  symlinkSync(join(ROOT, 'node_modules'), join(root, 'node_modules'));
  writeFileSync(join(root, 'package.json'), JSON.stringify({ type: 'module', version: '9.9.9' }));
  mkdirSync(join(root, 'src', 'cli'), { recursive: true });
  mkdirSync(join(root, 'src', 'lib'));
  writeFileSync(
    join(root, 'src', 'cli', 'main.ts'),
    [
      "import { readFileSync } from 'node:fs';",
      "import { greeting } from '../lib/greet.js';",
      "const version: string = (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;",
      "const frame = (new Error('where').stack ?? '').split('\\n')[1]?.trim();",
      'console.log(JSON.stringify({ greeting: greeting(), version, url: import.meta.url, frame }));',
      '',
    ].join('\n'),
  );
  setGreeting(root, 'one');
  return root;
}

function setGreeting(root: string, text: string): void {
  writeFileSync(join(root, 'src', 'lib', 'greet.ts'), `export function greeting(): string {\n  return '${text}';\n}\n`);
}

interface Ran {
  greeting: string;
  version: string;
  url: string;
  frame: string;
}

async function run(root: string, env: Record<string, string> = {}): Promise<Ran> {
  const { stdout } = await promisify(execFile)(process.execPath, [join(root, 'bin', 'killswitch.js')], { env: { ...process.env, ...env } });
  return JSON.parse(stdout.trim()) as Ran;
}

const bundles = (root: string) => readdirSync(join(root, '.bundle')).sort();

describe('bin/killswitch.js runs a bundle of the sources', () => {
  it('builds it on first use, reuses it while the sources are unchanged, builds again after an edit; paths and stack traces as under tsx', async () => {
    const root = project();
    const first = await run(root);
    expect(first.greeting).toBe('one');
    // `../../package.json` from the bundle resolves at the project's root, as from src/cli/main.ts.
    expect(first.version).toBe('9.9.9');
    const [key] = bundles(root);
    expect(first.url).toBe(`file://${join(root, '.bundle', key!, 'main.js')}`);
    // Source maps: the frame names the TypeScript file, not the bundle.
    expect(first.frame).toContain(`src${sep}cli${sep}main.ts:4`);

    const built = statSync(join(root, '.bundle', key!, 'main.js')).mtimeMs;
    expect((await run(root)).url).toBe(first.url);
    expect(bundles(root)).toEqual([key]);
    expect(statSync(join(root, '.bundle', key!, 'main.js')).mtimeMs).toBe(built);

    // A bundle of other sources a day old is removed at the next build; a recent one is kept (a running
    // process may still load its chunks).
    for (const [name, ageH] of [
      ['0000000000000old', 25],
      ['000000000recent', 1],
    ] as const) {
      mkdirSync(join(root, '.bundle', name));
      const t = new Date(Date.now() - ageH * 3600_000);
      utimesSync(join(root, '.bundle', name), t, t);
    }
    setGreeting(root, 'second');
    const edited = await run(root);
    expect(edited.greeting).toBe('second');
    expect(edited.url).not.toBe(first.url);
    expect(bundles(root)).toEqual([...new Set(['000000000recent', key!, relative(join(root, '.bundle'), join(edited.url.slice('file://'.length), '..'))])].sort());
  });

  it('processes started at once all run, and share one complete build', async () => {
    const root = project();
    const outs = await Promise.all(
      Array.from(
        { length: 4 },
        () =>
          new Promise<string>((resolve, reject) => {
            const child = spawn(process.execPath, [join(root, 'bin', 'killswitch.js')], { stdio: ['ignore', 'pipe', 'inherit'] });
            let out = '';
            child.stdout.on('data', (c: Buffer) => {
              out += c.toString();
            });
            child.on('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`exit ${code}`))));
          }),
      ),
    );
    const ran = outs.map((o) => JSON.parse(o.trim()) as Ran);
    expect(ran.map((r) => r.greeting)).toEqual(['one', 'one', 'one', 'one']);
    // One directory, no unfinished build left behind; every process loaded it.
    expect(bundles(root)).toHaveLength(1);
    expect(new Set(ran.map((r) => r.url))).toEqual(new Set([`file://${join(root, '.bundle', bundles(root)[0]!, 'main.js')}`]));
  });

  it('without a bundle (KILLSWITCH_BUNDLE=0, or none can be written) the sources run through tsx; KILLSWITCH_BUNDLE=1 makes a failed build an error', async () => {
    const root = project();
    const off = await run(root, { KILLSWITCH_BUNDLE: '0' });
    expect(off).toMatchObject({ greeting: 'one', version: '9.9.9', url: `file://${join(root, 'src', 'cli', 'main.ts')}` });
    // A file where the bundles' directory should be: nothing can be built there.
    writeFileSync(join(root, '.bundle'), 'not a directory');
    expect((await run(root)).url).toBe(`file://${join(root, 'src', 'cli', 'main.ts')}`);
    await expect(run(root, { KILLSWITCH_BUNDLE: '1' })).rejects.toThrow();
    expect(readFileSync(join(root, '.bundle'), 'utf8')).toBe('not a directory');
  });

  it("a process that built the bundle does not keep esbuild's service process for its life", async () => {
    const root = project();
    // The bundled main lists its own children once it runs (after the build): esbuild's `--service` child
    // (~76 MB) was one of them for as long as the process lived. An exited, not yet reaped child is fine.
    writeFileSync(
      join(root, 'src', 'cli', 'main.ts'),
      [
        "import { execFileSync } from 'node:child_process';",
        "const children = execFileSync('ps', ['-o', 'stat=,args=', '--ppid', String(process.pid)]).toString();",
        "console.log(JSON.stringify({ greeting: 'x', version: '', url: import.meta.url, frame: children }));",
        '',
      ].join('\n'),
    );
    const ran = await run(root);
    expect(ran.url).toContain('/.bundle/');
    const live = ran.frame.split('\n').filter((l) => l.includes('--service') && !/^Z/.test(l.trim()));
    expect(live).toEqual([]);
  });

  it("the repository's own CLI answers the same both ways", async () => {
    const version = (env: Record<string, string>) => promisify(execFile)(process.execPath, ['bin/killswitch.js', '--version'], { env: { ...process.env, ...env } }).then((r) => r.stdout.trim());
    const pkg = JSON.parse(readFileSync('package.json', 'utf8')) as { version: string };
    expect(await version({})).toBe(pkg.version);
    expect(await version({ KILLSWITCH_BUNDLE: '0' })).toBe(pkg.version);
  });

  it('every source that resolves a path from import.meta.url lives at src/<dir>/<file>, two levels deep like the bundle', () => {
    const offenders: string[] = [];
    for (const entry of readdirSync('src', { recursive: true, withFileTypes: true })) {
      if (!entry.isFile() || !entry.name.endsWith('.ts')) continue;
      const file = join(entry.parentPath, entry.name);
      if (readFileSync(file, 'utf8').includes('import.meta.url') && relative('src', file).split(sep).length !== 2) offenders.push(file);
    }
    expect(offenders).toEqual([]);
  });
});
