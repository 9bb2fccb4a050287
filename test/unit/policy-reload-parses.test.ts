import { mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterEach, describe, expect, it, vi } from 'vitest';

// How many times a load and a reload parse the YAML text: each parse holds the event loop (~1 s per MB
// of YAML, docs/performance.md "Policy at scale"), so the file is parsed once, not once more for its
// top-level sections. The library's parseDocument is wrapped to count its calls; it still parses.
const parses = vi.hoisted(() => ({ count: 0 }));
vi.mock('yaml', async (importOriginal) => {
  const yaml = await importOriginal<typeof import('yaml')>();
  return {
    ...yaml,
    parseDocument: (...args: Parameters<typeof yaml.parseDocument>) => {
      parses.count++;
      return yaml.parseDocument(...args);
    },
  };
});

const { PolicyStore } = await import('../../src/policy/index.js');

const text = (description: string) => `description: ${description}
servers:
  fs: { identity: { command: npx }, map: filesystem }
roles:
  code_agent: { allowed_servers: [fs] }
prohibited_capabilities: [shell_execution]
`;

const dir = mkdtempSync(join(tmpdir(), 'ks-policy-parses-'));
afterEach(() => rmSync(dir, { recursive: true, force: true }));

describe('PolicyStore parses the file once per load', () => {
  it('at start and at each reload: one YAML parse, the guarded sections read from it', async () => {
    const file = join(dir, 'policy.yaml');
    writeFileSync(file, text('first'));
    parses.count = 0;
    const store = await PolicyStore.open(file, { log: pino({ level: 'silent' }), watch: false, pollIntervalMs: 60_000, settleMs: 10 });
    try {
      expect(parses.count).toBe(1);
      writeFileSync(join(dir, 'next.yaml'), text('second'));
      renameSync(join(dir, 'next.yaml'), file);
      parses.count = 0;
      expect(await store.reload()).toBe('reloaded');
      expect(parses.count).toBe(1);
      // A reload that drops a guarded section is still refused (its sections come from that one parse).
      writeFileSync(join(dir, 'next.yaml'), text('third').replace('prohibited_capabilities: [shell_execution]\n', ''));
      renameSync(join(dir, 'next.yaml'), file);
      expect(await store.reload()).toBe('rejected');
      expect(store.status().lastError).toContain('prohibited_capabilities: missing, but the policy in force has it');
    } finally {
      await store.close();
    }
  });
});
