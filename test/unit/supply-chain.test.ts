import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { checkLicenses, EXCEPTIONS, type Lock, licenseAllowed, packageName, UI_BUNDLED } from '../../scripts/check-licenses.js';

const lockText = readFileSync('package-lock.json', 'utf8');
/** A fresh copy of the real lock for each case: the file itself is never edited. */
const lock = () => JSON.parse(lockText) as Lock & { packages: Record<string, { license?: unknown; version?: string; dev?: boolean }> };
const packageJson = JSON.parse(readFileSync('package.json', 'utf8')) as { license?: string; private?: boolean; allowScripts?: Record<string, boolean>; scarfSettings?: { enabled?: boolean } };
const dir = mkdtempSync(join(tmpdir(), 'licenses-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Runs the script as `npm run licenses:check` does, on a lock written to the temp directory. */
function runScript(edited: Lock) {
  const path = join(dir, `package-lock-${Math.random().toString(36).slice(2)}.json`);
  writeFileSync(path, JSON.stringify(edited));
  return spawnSync(process.execPath, ['--import', 'tsx', 'scripts/check-licenses.ts', path], { encoding: 'utf8' });
}

describe('production dependency licenses (scripts/check-licenses.ts)', () => {
  it('the real lock: every shipped package allowed or a listed exception, unleash-server tree included', () => {
    const report = checkLicenses(lock());
    expect(report.problems).toEqual([]);
    expect(report.checked).toBeGreaterThan(500);
    expect(report.excepted).toHaveLength(Object.keys(EXCEPTIONS).length);
    expect(lock().packages['node_modules/unleash-server']?.dev).toBeUndefined();
  });

  it('exits 1 naming the package when a production dependency turns GPL (a copy of the lock, in a temp dir)', () => {
    const edited = lock();
    edited.packages['node_modules/pg']!.license = 'GPL-3.0-only';
    const run = runScript(edited);
    expect(run.status).toBe(1);
    expect(run.stderr).toContain(`pg@${edited.packages['node_modules/pg']!.version}: license GPL-3.0-only is not allowed (via pg;`);
    expect(runScript(lock()).status).toBe(0);
  });

  it('fails on copyleft deep in unleash-server’s tree, and says through which packages it comes', () => {
    const edited = lock();
    edited.packages['node_modules/hyperloglog-lite']!.version = '9.9.9';
    edited.packages['node_modules/hyperloglog-lite']!.license = 'AGPL-3.0-or-later';
    const { problems } = checkLicenses(edited);
    expect(problems).toContainEqual(expect.stringMatching(/^hyperloglog-lite@9\.9\.9: license AGPL-3\.0-or-later is not allowed \(via unleash-server > hyperloglog-lite;/));
    // Its exception was for 1.0.2 only: an upgrade is read again, not trusted.
    expect(problems).toContainEqual(expect.stringMatching(/^hyperloglog-lite@1\.0\.2: listed in EXCEPTIONS but no shipped package/));
  });

  it('fails on a production package with no license recorded', () => {
    const edited = lock();
    delete edited.packages['node_modules/fastify']!.license;
    expect(checkLicenses(edited).problems).toContainEqual(expect.stringMatching(/^fastify@[\d.]+: license \(none\) is not allowed/));
  });

  it('ignores dev-only packages, except those bundled into the admin UI', () => {
    const edited = lock();
    edited.packages['node_modules/vitest']!.license = 'GPL-3.0-only';
    expect(checkLicenses(edited).problems).toEqual([]);
    edited.packages['node_modules/@kurkle/color']!.license = 'GPL-3.0-only';
    expect(checkLicenses(edited).problems).toContainEqual(expect.stringMatching(/^@kurkle\/color@[\d.]+: license GPL-3\.0-only is not allowed \(via chart\.js > @kurkle\/color;/));
  });

  it('reads SPDX expressions: OR needs one allowed license, AND all, WITH none', () => {
    for (const ok of ['MIT', 'mit', '(WTFPL OR MIT)', 'WTFPL OR ISC', '(BSD-2-Clause OR MIT OR Apache-2.0)', '(MIT OR Apache-2.0) AND BSD-3-Clause', 'Apache-2.0+']) {
      expect(licenseAllowed(ok), ok).toBe(true);
    }
    for (const bad of ['GPL-2.0-only', 'LGPL-3.0-or-later', 'AGPL-3.0', 'MPL-2.0', 'EPL-2.0', 'CDDL-1.0', 'SSPL-1.0', 'BUSL-1.1', 'CC-BY-NC-4.0', 'WTFPL', 'MIT AND GPL-3.0', 'GPL-2.0 WITH Classpath-exception-2.0', 'Apache 2.0', 'SEE LICENSE IN LICENSE', 'UNLICENSED', '', '(MIT', 'MIT OR']) {
      expect(licenseAllowed(bad), bad).toBe(false);
    }
  });

  it('UI_BUNDLED names the packages ui/src imports at run time', () => {
    const imported = new Set<string>();
    for (const file of readdirSync('ui/src', { recursive: true, encoding: 'utf8' }).filter((f) => /\.tsx?$/.test(f))) {
      const source = readFileSync(join('ui/src', file), 'utf8');
      for (const [, specifier] of source.matchAll(/(?:^import (?!type )[^'"]*from |import\()['"]([^'".][^'"]*)['"]/gm)) {
        imported.add(specifier!.startsWith('@') ? specifier!.split('/').slice(0, 2).join('/') : specifier!.split('/')[0]!);
      }
    }
    expect([...imported].sort()).toEqual([...UI_BUNDLED].sort());
  });
});

describe('install scripts', () => {
  // npm (11.19 here) reads package.json's allowScripts: `false` skips a package's preinstall, install and
  // postinstall, an unlisted one runs them with a warning. Every package of the lock that has one is
  // listed, each reviewed (CONTRIBUTING.md, "Dependencies"): none is needed, as the image shows by
  // installing with --ignore-scripts and then building the bundle with esbuild.
  it('every package with an install script in the lock is named in allowScripts, and none runs', () => {
    const withScripts = Object.entries(lock().packages as Record<string, { hasInstallScript?: boolean }>)
      .filter(([, entry]) => entry.hasInstallScript)
      .map(([path]) => packageName(path));
    expect([...new Set(withScripts)].sort()).toEqual(Object.keys(packageJson.allowScripts ?? {}).sort());
    expect(Object.values(packageJson.allowScripts ?? {}).every((allowed) => allowed === false)).toBe(true);
  });

  it('Scarf (swagger-ui-dist, in unleash-server) reports no install analytics for this project', () => {
    expect(packageJson.scarfSettings?.enabled).toBe(false);
  });
});

describe('the project’s own license', () => {
  it('LICENSE is the unmodified Apache License 2.0 (apache.org/licenses/LICENSE-2.0.txt) and package.json says so', () => {
    expect(createHash('md5').update(readFileSync('LICENSE')).digest('hex')).toBe('3b83ef96387f14655fc854ddc3c6bd57');
    expect(packageJson.license).toBe('Apache-2.0');
    expect(JSON.parse(lockText).packages[''].license).toBe('Apache-2.0');
  });

  it('package.json is private: the project is used from a clone or the image, never published to npm', () => {
    expect(packageJson.private).toBe(true);
  });
});

describe('SECURITY.md and CONTRIBUTING.md', () => {
  /** GitHub's anchor of a heading: lower case, punctuation dropped, spaces as dashes. */
  const anchor = (heading: string) => heading.trim().toLowerCase().replace(/[^\p{L}\p{N}\s-]/gu, '').replace(/\s/g, '-');
  const anchors = (file: string) => new Set(readFileSync(file, 'utf8').split('\n').filter((l) => /^#{1,6} /.test(l)).map((l) => anchor(l.replace(/^#+ /, ''))));

  // A reviewer follows these pointers to the guarantees they rely on: a renamed heading must not leave one dangling.
  it('link only to files and headings that exist', () => {
    const broken: string[] = [];
    for (const file of ['SECURITY.md', 'CONTRIBUTING.md']) {
      for (const [, target] of readFileSync(file, 'utf8').matchAll(/\]\(([^)\s]+)\)/g)) {
        if (/^https?:/.test(target!)) continue;
        const [path, hash] = target!.split('#');
        const resolved = path ? join(dirname(file), path) : file;
        if (!existsSync(resolved) || (hash && !anchors(resolved).has(hash))) broken.push(`${file}: ${target}`);
      }
    }
    expect(broken).toEqual([]);
  });
});
