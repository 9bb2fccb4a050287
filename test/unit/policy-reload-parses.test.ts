import { mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Parser } from 'yaml';
import { PolicyStore } from '../../src/policy/index.js';

// How many times a load and a reload parse the YAML text: each parse holds the event loop (~1 s per MB
// of YAML, docs/performance.md "Policy at scale"), so the file is parsed once, not once more for its
// top-level sections. The library's Parser (parseDocument runs one per document) counts its runs; it
// still parses. Patched on the prototype and put back, as files share a worker's modules (isolate: false).
let parses = 0;
const parse = Parser.prototype.parse;
beforeEach(() => {
  Parser.prototype.parse = function (this: Parser, ...args: Parameters<Parser['parse']>) {
    parses++;
    return parse.apply(this, args);
  };
});
afterEach(() => {
  Parser.prototype.parse = parse;
});

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
    parses = 0;
    const store = await PolicyStore.open(file, { log: pino({ level: 'silent' }), watch: false, pollIntervalMs: 60_000, settleMs: 10 });
    try {
      expect(parses).toBe(1);
      writeFileSync(join(dir, 'next.yaml'), text('second'));
      renameSync(join(dir, 'next.yaml'), file);
      parses = 0;
      expect(await store.reload()).toBe('reloaded');
      expect(parses).toBe(1);
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
