// npm here cannot resolve @biomejs/biome's optional per-platform packages for other platforms, so it
// leaves them out of package-lock.json and `npm ci` then refuses the lock ("Missing: @biomejs/cli-…").
// This adds the missing entries (marked optional with their os/cpu, so npm skips them on other
// platforms). Run it after any `npm install` that rewrites the lock: node scripts/fix-lock-biome.mjs
import { readFileSync, writeFileSync } from 'node:fs';

const path = new URL('../package-lock.json', import.meta.url);
const lock = JSON.parse(readFileSync(path, 'utf8'));
const version = lock.packages['node_modules/@biomejs/biome'].version;
const platforms = {
  'android-arm64': ['android', 'arm64'], 'android-x64': ['android', 'x64'], 'darwin-arm64': ['darwin', 'arm64'], 'darwin-x64': ['darwin', 'x64'],
  'linux-arm64': ['linux', 'arm64', 'glibc'], 'linux-x64': ['linux', 'x64', 'glibc'], 'linux-arm64-musl': ['linux', 'arm64', 'musl'], 'linux-x64-musl': ['linux', 'x64', 'musl'],
  'win32-arm64': ['win32', 'arm64'], 'win32-x64': ['win32', 'x64'],
};
let added = 0;
for (const [name, [os, cpu, libc]] of Object.entries(platforms)) {
  const key = `node_modules/@biomejs/cli-${name}`;
  if (lock.packages[key]) continue;
  lock.packages[key] = { version, cpu: [cpu], dev: true, license: 'MIT OR Apache-2.0', optional: true, os: [os], ...(libc ? { libc: [libc] } : {}), engines: { node: '>=14.21.3' } };
  added++;
}
lock.packages = Object.fromEntries(Object.entries(lock.packages).sort(([a], [b]) => (a === '' ? -1 : b === '' ? 1 : a < b ? -1 : a > b ? 1 : 0)));
writeFileSync(path, `${JSON.stringify(lock, null, 2)}\n`);
console.log(`added ${added} lock entries for @biomejs/biome ${version}`);
