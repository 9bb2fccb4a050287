import type { ChildProcess } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { TestContext } from '../helpers/context.js';
import { api, startChild } from '../helpers/control-plane.js';

// A container whose environment sets a proxy for the outside world (HTTP_PROXY, HTTPS_PROXY), as many
// corporate images and CI runners do. unleash-client sends its polls through it unless NO_PROXY names
// the host; a proxy cannot reach this machine's loopback, so an Unleash at 127.0.0.1 (the embedded one,
// or this run's) must be polled directly (src/flags/http-agent.ts).

const unleash = inject('unleash');
const t = new TestContext();
const children: ChildProcess[] = [];

beforeAll(() => t.setup());
afterAll(async () => {
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
  await t.teardown();
});

describe('HTTP_PROXY and HTTPS_PROXY set to a proxy that answers nothing, no NO_PROXY', () => {
  it('the Unleash at 127.0.0.1 is polled directly: ready from a fetch (no backup to fall back on), no failed fetch, flags not stale', { timeout: 90_000 }, async () => {
    const dead = 'http://127.0.0.1:9';
    const cp = await startChild(t, unleash, { HTTP_PROXY: dead, HTTPS_PROXY: dead, http_proxy: dead, https_proxy: dead, NO_PROXY: '', no_proxy: '' }, children);
    const ready = (await api(cp.base, 'GET', '/readyz', {})).body as { checks: Record<string, string>; warnings: string[] };
    expect(ready.checks['flags']).toBe('ok');
    expect(ready.warnings.filter((w) => w.startsWith('flags stale'))).toEqual([]);
    expect(cp.logs().filter((l) => l['msg'] === 'flags: Unleash fetch failed')).toEqual([]);
  });
});
