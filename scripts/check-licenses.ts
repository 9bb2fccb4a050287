// The licenses of what this product ships, read from package-lock.json (lockfile v2/v3 records each
// package's `license` and marks dev-only ones `dev: true`): every production dependency, transitive ones
// and unleash-server's whole tree included, and the dev dependencies that vite bundles into ui/dist (the
// image serves that bundle). Each must be under a license of ALLOWED, or an SPDX expression that these
// satisfy, or be listed in EXCEPTIONS with the license found by reading the package and why it is
// acceptable. Anything else fails: copyleft (GPL, LGPL, AGPL, MPL, EPL, ...), no license recorded, a
// spelling that is not SPDX. `npm run licenses:check [path/to/package-lock.json]`;
// test/unit/licenses.test.ts runs it on the real lock. CONTRIBUTING.md ("Dependencies") says what to do
// when it fails.
import { readFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';

/**
 * Permissive licenses: use, modification and redistribution, also in a closed product or an image,
 * with at most the duty to keep the copyright and license notice (Apache-2.0 also NOTICE files and a
 * statement of changes; Python-2.0 a summary of changes). No source-disclosure (copyleft) duty, no
 * field-of-use or non-commercial restriction. WTFPL is not here (not OSI-approved; some companies'
 * policies refuse it): its one package is an exception below.
 */
export const ALLOWED: ReadonlySet<string> = new Set([
  'MIT',
  'MIT-0',
  'ISC',
  'BSD-2-Clause',
  'BSD-3-Clause',
  'Apache-2.0',
  '0BSD',
  'BlueOak-1.0.0',
  'CC0-1.0',
  'Unlicense',
  'Python-2.0',
  'Zlib',
]);

export interface LicenseException {
  /** What the package is really under, as read from the package itself (node_modules/<name>/). */
  license: string;
  reason: string;
}

/**
 * Production packages whose lock entry does not pass on its own, by `name@version`: an upgrade makes
 * the entry stale (reported as an error) so that the new version is read again instead of trusted.
 * All are in unleash-server's tree (the embedded Unleash of `npm start`; production deployments may
 * point UNLEASH_URL at their own Unleash instead, but `npm ci --omit=dev` installs it all the same).
 */
export const EXCEPTIONS: Readonly<Record<string, LicenseException>> = {
  '@ewoudenberg/difflib@0.1.0': {
    license: 'Python-2.0 (PSF License Agreement)',
    reason: 'package.json has only the old `licenses: [{type: "PSF"}]` array, which the lock does not record; its README carries the PSF License Agreement for Python 2.7.2 (a port of Python\'s difflib). Permissive, like argparse. Via unleash-server > json-diff.',
  },
  'cpu-features@0.0.2': {
    license: 'MIT',
    reason: 'old `licenses: [{type: "MIT"}]` array instead of `license`; its LICENSE file is MIT. Optional native addon via unleash-server > db-migrate > tunnel-ssh > ssh2.',
  },
  'cycle@1.0.3': {
    license: 'public domain',
    reason: 'no license field; cycle.js (Douglas Crockford) says "Public Domain." in its header. Via unleash-server > db-migrate > prompt > winston.',
  },
  'dreamopt@0.8.0': {
    license: 'MIT',
    reason: 'the npm package carries no license field or file; its repository (github.com/andreyvit/dreamopt.js) has an MIT LICENSE, Copyright 2013-2014 Andrey Tarantsov. Via unleash-server > json-diff.',
  },
  'eyes@0.1.8': {
    license: 'MIT',
    reason: 'old `licenses: ["MIT"]` array instead of `license`; its LICENSE file is MIT. Via unleash-server > db-migrate > prompt > winston.',
  },
  'hyperloglog-lite@1.0.2': {
    license: 'MIT',
    reason: 'old `licenses: [{name: "MIT"}]` array instead of `license`; its LICENSE.md is MIT. Direct dependency of unleash-server.',
  },
  'node-fs@0.1.7': {
    license: 'MIT',
    reason: 'old `licenses: [{type: "MIT"}]` array instead of `license`; its LICENSE file is MIT. Via unleash-server > db-migrate > final-fs.',
  },
  'ssh2@1.4.0': {
    license: 'MIT',
    reason: 'old `licenses: [{type: "MIT"}]` array instead of `license`; its LICENSE file is MIT. Via unleash-server > db-migrate > tunnel-ssh.',
  },
  'when@2.0.1': {
    license: 'MIT',
    reason: 'old `licenses: [{type: "MIT"}]` array instead of `license`; its LICENSE.txt is MIT. Via unleash-server > db-migrate > final-fs.',
  },
  'revalidator@0.1.8': {
    license: 'Apache-2.0',
    reason: 'license spelled "Apache 2.0" (not an SPDX id); its LICENSE file is the Apache License 2.0. Via unleash-server > db-migrate > prompt.',
  },
  'truncate-utf8-bytes@1.0.2': {
    license: 'WTFPL',
    reason: 'WTFPL only: grants every right with no condition (no copyleft), but is not OSI-approved and some policies refuse it, so it is named here rather than allowed in general. Via unleash-server > sanitize-filename (which itself is "WTFPL OR ISC", and utf8-byte-length "(WTFPL OR MIT)": both pass on the other license).',
  },
};

/**
 * Dev dependencies that end up in what is shipped: vite bundles them into ui/dist, which the image
 * copies and the control plane serves. Their trees are checked like production ones
 * (test/unit/licenses.test.ts keeps this list equal to the packages ui/src imports).
 */
export const UI_BUNDLED: readonly string[] = ['chart.js', 'preact'];

interface LockEntry {
  name?: string;
  version?: string;
  license?: unknown;
  dev?: boolean;
  link?: boolean;
  dependencies?: Record<string, string>;
  optionalDependencies?: Record<string, string>;
  peerDependencies?: Record<string, string>;
  devDependencies?: Record<string, string>;
}

export interface Lock {
  lockfileVersion?: number;
  packages?: Record<string, LockEntry>;
}

export interface ShippedPackage {
  /** Its key in the lock (`node_modules/a/node_modules/b`). */
  path: string;
  name: string;
  version: string;
  license: unknown;
  /** How the root reaches it: `unleash-server > db-migrate > ssh2`. */
  via: string;
}

export interface LicenseReport {
  checked: number;
  /** Package count per license as recorded in the lock. */
  byLicense: Record<string, number>;
  /** One line per package that is neither allowed nor an exception, and per stale exception. */
  problems: string[];
  /** The exceptions that matched a package. */
  excepted: string[];
}

/** A package's name from its key in the lock (`node_modules/a/node_modules/@s/b` → `@s/b`). */
export const packageName = (path: string) => path.slice(path.lastIndexOf('node_modules/') + 'node_modules/'.length);

/** Where Node finds `dep` required from the package at `from`: the nearest node_modules upwards. */
function resolve(packages: Record<string, LockEntry>, from: string, dep: string): string | undefined {
  let dir = from;
  for (;;) {
    const candidate = dir === '' ? `node_modules/${dep}` : `${dir}/node_modules/${dep}`;
    if (packages[candidate]) return candidate;
    if (dir === '') return undefined;
    const up = dir.lastIndexOf('/node_modules/');
    dir = up === -1 ? '' : dir.slice(0, up);
  }
}

/**
 * Every package the product ships: those not marked `dev` (what `npm ci --omit=dev` installs, optional
 * platform packages of other platforms included) and the trees of UI_BUNDLED.
 */
export function shippedPackages(lock: Lock, uiBundled: readonly string[] = UI_BUNDLED): ShippedPackage[] {
  const packages = lock.packages;
  if (!packages || (lock.lockfileVersion ?? 0) < 2) throw new Error('package-lock.json must be lockfileVersion 2 or 3 (with "packages"): run npm install with npm 7 or later');
  // The first path from the root to each package, breadth first: the shortest "why is this here".
  const via = new Map<string, string>([['', '']]);
  const queue = [''];
  for (let i = 0; i < queue.length; i++) {
    const from = queue[i]!;
    const entry = packages[from]!;
    // The root's devDependencies too: the "via" of the UI_BUNDLED trees.
    const deps = { ...entry.dependencies, ...entry.optionalDependencies, ...entry.peerDependencies, ...(from === '' ? entry.devDependencies : {}) };
    for (const dep of Object.keys(deps)) {
      const path = resolve(packages, from, dep);
      if (path === undefined || via.has(path)) continue;
      via.set(path, via.get(from) ? `${via.get(from)} > ${dep}` : dep);
      queue.push(path);
    }
  }
  const bundled = new Set<string>();
  const walk = (path: string) => {
    if (bundled.has(path)) return;
    bundled.add(path);
    const entry = packages[path]!;
    for (const dep of Object.keys({ ...entry.dependencies, ...entry.optionalDependencies })) {
      const target = resolve(packages, path, dep);
      if (target !== undefined) walk(target);
    }
  };
  for (const name of uiBundled) {
    const path = resolve(packages, '', name);
    if (path === undefined) throw new Error(`${name} (UI_BUNDLED) is not in the lock`);
    walk(path);
  }
  const shipped: ShippedPackage[] = [];
  for (const [path, entry] of Object.entries(packages)) {
    // The root is this project; a link is a workspace folder whose own entry is checked.
    if (path === '' || entry.link) continue;
    if (entry.dev && !bundled.has(path)) continue;
    shipped.push({ path, name: entry.name ?? packageName(path), version: entry.version ?? '', license: entry.license, via: via.get(path) ?? '(not reached from package.json)' });
  }
  return shipped;
}

/**
 * Whether an SPDX expression is satisfied by allowed licenses: `A OR B` needs one of them, `A AND B`
 * both, `A WITH exception` is never allowed without an explicit exception entry. Identifiers compare
 * without case; `X+` counts as X. Anything unparsable is not allowed.
 */
export function licenseAllowed(expression: string, allowed: ReadonlySet<string> = ALLOWED): boolean {
  const lower = new Set([...allowed].map((id) => id.toLowerCase()));
  const tokens = expression.match(/\(|\)|[^\s()]+/g) ?? [];
  let at = 0;
  const peek = () => tokens[at]?.toUpperCase();
  const or = (): boolean => {
    let ok = and();
    while (peek() === 'OR') {
      at++;
      ok = and() || ok;
    }
    return ok;
  };
  const and = (): boolean => {
    let ok = term();
    while (peek() === 'AND') {
      at++;
      ok = term() && ok;
    }
    return ok;
  };
  const term = (): boolean => {
    const token = tokens[at++];
    if (token === undefined) throw new Error('unexpected end');
    if (token === '(') {
      const ok = or();
      if (tokens[at++] !== ')') throw new Error('missing )');
      return ok;
    }
    if (token === ')' || ['AND', 'OR', 'WITH'].includes(token.toUpperCase())) throw new Error(`unexpected ${token}`);
    if (peek() === 'WITH') {
      at += 2;
      return false;
    }
    return lower.has(token.replace(/\+$/, '').toLowerCase());
  };
  try {
    const ok = or();
    return at === tokens.length && ok;
  } catch {
    return false;
  }
}

export function checkLicenses(lock: Lock, options: { allowed?: ReadonlySet<string>; exceptions?: Readonly<Record<string, LicenseException>>; uiBundled?: readonly string[] } = {}): LicenseReport {
  const allowed = options.allowed ?? ALLOWED;
  const exceptions = options.exceptions ?? EXCEPTIONS;
  const report: LicenseReport = { checked: 0, byLicense: {}, problems: [], excepted: [] };
  const used = new Set<string>();
  for (const pkg of shippedPackages(lock, options.uiBundled)) {
    report.checked++;
    const recorded = typeof pkg.license === 'string' ? pkg.license : pkg.license === undefined ? '(none)' : JSON.stringify(pkg.license);
    report.byLicense[recorded] = (report.byLicense[recorded] ?? 0) + 1;
    if (typeof pkg.license === 'string' && licenseAllowed(pkg.license, allowed)) continue;
    const key = `${pkg.name}@${pkg.version}`;
    if (exceptions[key]) {
      used.add(key);
      report.excepted.push(`${key} (${exceptions[key].license})`);
      continue;
    }
    report.problems.push(`${key}: license ${recorded} is not allowed (via ${pkg.via}; ${pkg.path})`);
  }
  for (const key of Object.keys(exceptions)) {
    if (!used.has(key)) report.problems.push(`${key}: listed in EXCEPTIONS but no shipped package of that version needs it any more: remove the entry (or read the new version's license and list that)`);
  }
  return report;
}

export function main(lockPath = 'package-lock.json'): number {
  const report = checkLicenses(JSON.parse(readFileSync(lockPath, 'utf8')) as Lock);
  const counts = Object.entries(report.byLicense).sort((a, b) => b[1] - a[1]);
  console.log(`${report.checked} shipped packages in ${lockPath}: ${counts.map(([license, n]) => `${license} ${n}`).join(', ')}`);
  console.log(`exceptions (scripts/check-licenses.ts): ${report.excepted.join(', ') || 'none'}`);
  for (const problem of report.problems) console.error(`NOT ALLOWED ${problem}`);
  if (report.problems.length > 0) {
    console.error(`${report.problems.length} license problem(s): read the package's own license (node_modules/<name>/), then replace the dependency or add an exception with the reason`);
    return 1;
  }
  console.log('licenses: ok');
  return 0;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) process.exitCode = main(process.argv[2]);
