import type { ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from 'vitest';
import { TestContext } from '../helpers/context.js';
import { CHILD_POLICY, killChildren, startChild, withTimeout } from '../helpers/control-plane.js';

// A real `killswitch start` parses a large reloaded policy file on its parser thread (src/policy/parse-thread.ts)
// both ways the CLI runs: the bundle (bin/bundle.js bundles src/policy/parse.worker.ts beside main.js) and the
// sources through tsx (KILLSWITCH_BUNDLE=0: bin/tsx-worker.js loads the thread's .ts entry). The file keeps
// the servers of the child's policy (a start syncs flags for its servers into the run's shared Unleash; a
// reload does not), with a tool map long enough to go to the thread (POLICY_THREAD_MIN_BYTES).

const unleash = inject('unleash');
const t = new TestContext();
const children: ChildProcess[] = [];
let dir: string;
beforeAll(async () => {
  await t.setup();
  dir = mkdtempSync(join(tmpdir(), 'ks-policy-reload-'));
});
afterEach(() => killChildren(children));
afterAll(async () => {
  rmSync(dir, { recursive: true, force: true });
  await t.teardown();
});

const base = readFileSync(CHILD_POLICY, 'utf8');
/** The child's policy with 1,500 more tools on the memory server (~50 KiB). */
const large = (label: string) =>
  base.replace('    map: memory\n', `    map: memory\n    tools:\n${Array.from({ length: 1500 }, (_, i) => `      ${label}_tool_${String(i).padStart(4, '0')}: "storage:read"\n`).join('')}`);

describe('killswitch start parses a large reload on its parser thread', () => {
  for (const [mode, env] of [
    ['the bundle', {}],
    ['the sources through tsx (KILLSWITCH_BUNDLE=0)', { KILLSWITCH_BUNDLE: '0' }],
  ] as const) {
    it(`from ${mode}: the reload is applied, parsed on the thread; SIGTERM still exits 0`, async () => {
      const file = join(dir, `${Object.keys(env).length ? 'tsx' : 'bundle'}.yaml`);
      writeFileSync(file, base);
      const cp = await startChild(t, unleash, { ...env, POLICY_FILE: file }, children);
      const text = large('reloaded');
      expect(Buffer.byteLength(text)).toBeGreaterThan(16 * 1024);
      writeFileSync(`${file}.next`, text);
      renameSync(`${file}.next`, file);
      const hash = createHash('sha256').update(text).digest('hex');
      const reloaded = () => cp.logs().find((l) => l['msg'] === 'policy reloaded' && l['hash'] === hash);
      const deadline = Date.now() + 30_000;
      while (!reloaded() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
      expect(reloaded()).toMatchObject({ parsed_on: 'thread' });
      expect(cp.logs().filter((l) => String(l['msg']).startsWith('policy parser thread unavailable'))).toEqual([]);
      cp.child.kill('SIGTERM');
      expect((await withTimeout(cp.exited, 20_000, 'exit after SIGTERM')).code).toBe(0);
    });
  }
});
