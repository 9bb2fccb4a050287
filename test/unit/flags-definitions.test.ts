import { describe, expect, it } from 'vitest';
import { desiredFlags, FlagDefinitionError, loadFlagDefinitions, parseFlagFile, strategyFingerprint, strategyPayload } from '../../src/flags/definitions.js';
import { FLAGS_DIR } from '../../src/flags/setup.js';
import { flagsForCall } from '../../src/flags/step.js';
import { MANAGED_TITLE } from '../../src/flags/sync.js';

describe('flag definitions (flags/)', () => {
  it('defines the seed 001 flags and the per-token-type flags, and generates read/write/delete for every policy server', async () => {
    const defs = await loadFlagDefinitions(FLAGS_DIR);
    const flags = desiredFlags(defs, { servers: ['filesystem', 'postgres'], extraFlags: ['mcp.database.write', 'mcp.custom.flag'] });
    const names = flags.map((f) => f.name);
    for (const n of ['mcp.enabled', 'mcp.tokens.ro', 'mcp.tokens.rw', 'mcp.tokens.admin', 'mcp.filesystem.write', 'mcp.shell.execute', 'mcp.database.write', 'mcp.github.api', 'mcp.cloud.infra']) {
      expect(names).toContain(n);
    }
    for (const s of ['filesystem', 'postgres']) for (const c of ['read', 'write', 'delete']) expect(names).toContain(`mcp.${s}.${c}`);
    // The explicit seed flag wins over the generated per-server one.
    const fsWrite = flags.find((f) => f.name === 'mcp.filesystem.write')!;
    expect(fsWrite.type).toBe('kill-switch');
    expect(fsWrite.source).toMatch(/capabilities\.yaml$/);
    // An extra flag the policy names without a definition still gets created (a missing flag would deny forever).
    expect(flags.find((f) => f.name === 'mcp.custom.flag')?.type).toBe('kill-switch');
    expect(new Set(names).size).toBe(names.length);
    // All on by default: one 100% strategy without constraints.
    for (const f of flags) expect(f.strategies).toEqual([{ name: 'flexibleRollout', parameters: {}, constraints: [] }]);
  });

  it('rejects unknown keys, unknown context fields, missing descriptions and {server} outside per_server, naming the file and key', () => {
    const bad = (text: string) => () => parseFlagFile('flags/x.yaml', text);
    expect(bad('flags:\n  - name: a.b\n    type: kill-switch\n    description: d\n    colour: red\n')).toThrow(/flags\/x\.yaml: flags\[0\]: unknown key "colour"/);
    expect(bad('flags:\n  - name: a.b\n    type: kill-switch\n')).toThrow(/flags\[0\]\.description: required/);
    expect(bad('flags:\n  - name: a.b\n    type: release\n    description: d\n')).toThrow(/flags\[0\]\.type: expected one of kill-switch, permission/);
    expect(bad('flags:\n  - name: mcp.{server}.read\n    type: permission\n    description: d\n')).toThrow(/only allowed under per_server/);
    expect(bad('per_server:\n  - name: mcp.read\n    type: permission\n    description: d\n')).toThrow(/must contain \{server\}/);
    expect(
      bad('flags:\n  - name: a.b\n    type: kill-switch\n    description: d\n    strategies:\n      - constraints:\n          - contextName: tokentype\n            operator: IN\n            values: [rw]\n'),
    ).toThrow(/strategies\[0\]\.constraints\[0\]\.contextName: expected one of/);
    expect(
      bad('flags:\n  - name: a.b\n    type: kill-switch\n    description: d\n    strategies:\n      - constraints:\n          - contextName: tokenType\n            operator: IN\n'),
    ).toThrow(/values: IN needs a non-empty list/);
    expect(bad('flags: [')).toThrow(FlagDefinitionError);
  });

  it('parses strategies with rollout and constraints on the context fields', () => {
    const defs = parseFlagFile(
      'x.yaml',
      [
        'per_server:',
        '  - name: mcp.{server}.write',
        '    type: permission',
        '    description: Writes on {server}.',
        '    strategies:',
        '      - rollout: 50',
        '        constraints:',
        '          - contextName: mcpEnvironment',
        '            operator: NOT_IN',
        '            values: [production]',
        '          - contextName: server',
        '            operator: IN',
        '            values: ["{server}"]',
      ].join('\n'),
    );
    const [flag] = desiredFlags(defs, { servers: ['memory'], extraFlags: [] });
    expect(flag).toMatchObject({
      name: 'mcp.memory.write',
      description: 'Writes on memory.',
      strategies: [
        {
          name: 'flexibleRollout',
          parameters: { rollout: '50' },
          constraints: [
            { contextName: 'mcpEnvironment', operator: 'NOT_IN', values: ['production'] },
            { contextName: 'server', operator: 'IN', values: ['memory'] },
          ],
        },
      ],
    });
    expect(() => desiredFlags(defs, { servers: ['bad name'], extraFlags: [] })).toThrow(/cannot be part of a flag name/);
  });

  it('fingerprints a strategy the same way from a definition and from what Unleash returns, and differently once edited', () => {
    const payload = strategyPayload('mcp.x.write', { name: 'flexibleRollout', parameters: {}, constraints: [{ contextName: 'tokenType', operator: 'IN', values: ['rw', 'admin'] }] });
    const fromUnleash = {
      id: 'abc',
      name: 'flexibleRollout',
      title: 'whatever',
      parameters: { stickiness: 'default', groupId: 'mcp.x.write', rollout: '100' },
      constraints: [{ contextName: 'tokenType', operator: 'IN', values: ['admin', 'rw'], inverted: false, caseInsensitive: false, value: '' }],
      segments: [],
      variants: [],
      disabled: false,
      sortOrder: 0,
    };
    const fp = strategyFingerprint(payload);
    expect(fp).toMatch(/^[0-9a-f]{12}$/);
    expect(MANAGED_TITLE.test(`flags-as-code ${fp}`)).toBe(true);
    expect(strategyFingerprint(fromUnleash)).toBe(fp);
    expect(strategyFingerprint({ ...fromUnleash, constraints: [{ ...fromUnleash.constraints[0]!, values: ['admin'] }] })).not.toBe(fp);
    expect(strategyFingerprint({ ...fromUnleash, parameters: { ...fromUnleash.parameters, rollout: '0' } })).not.toBe(fp);
    expect(strategyFingerprint({ ...fromUnleash, disabled: true })).not.toBe(fp);
    expect(strategyFingerprint({ ...fromUnleash, segments: [3] })).not.toBe(fp);
  });

  it('lists exactly the flags of DESIGN.md §5 for a call, each once', () => {
    expect(flagsForCall('rw', 'postgres', 'write', ['mcp.database.write'])).toEqual(['mcp.enabled', 'mcp.tokens.rw', 'mcp.postgres.write', 'mcp.database.write']);
    expect(flagsForCall('ro', 'filesystem', 'read', [])).toEqual(['mcp.enabled', 'mcp.tokens.ro', 'mcp.filesystem.read']);
    expect(flagsForCall('admin', 'database', 'write', ['mcp.database.write', 'mcp.enabled'])).toEqual(['mcp.enabled', 'mcp.tokens.admin', 'mcp.database.write']);
  });
});
