import { readFileSync } from 'node:fs';
import type { Unleash } from 'unleash-client';
import { afterAll, describe, expect, it } from 'vitest';
import { parseFlagFile, strategyPayload } from '../../src/flags/definitions.js';
import { toUnleashContext } from '../../src/flags/service.js';
import { offlineUnleash } from '../helpers/unleash-offline.js';

// docs/flags.md, "Where this differs from seed 001's Unleash example", gives the flags/ YAML that makes
// mcp.database.write behave as seed 001's strategies do: on in development, on in staging only for the
// roles database_agent and master_agent, off in production. This reads that block from the page, parses
// it as `flags sync` does, and evaluates it with the unleash-client SDK the control plane uses, with the
// context a decision builds: a reader who copies it gets what the page says.

const SECTION = "## Where this differs from seed 001's Unleash example";
const clients: Unleash[] = [];
afterAll(() => {
  for (const c of clients) c.destroy();
});

function exampleBlock(): string {
  const page = readFileSync('docs/flags.md', 'utf8');
  const section = page.split(SECTION)[1]?.split(/^## /m)[0];
  expect(section, `docs/flags.md has the section "${SECTION}"`).toBeDefined();
  const m = /^([ \t]*)```ya?ml[ \t]*\n([\s\S]*?)^\1```/m.exec(section ?? '');
  expect(m, 'the section has a ```yaml block').not.toBeNull();
  const indent = m?.[1]?.length ?? 0;
  return (m?.[2] ?? '').replace(new RegExp(`^[ \\t]{0,${indent}}`, 'gm'), '');
}

async function evaluatorFor(block: string): Promise<(role: string, environment: string) => boolean> {
  const defs = parseFlagFile('docs/flags.md', `flags:\n${block}`);
  expect(defs.flags.map((f) => f.name)).toEqual(['mcp.database.write']);
  const flag = defs.flags[0]!;
  const c = await offlineUnleash('docs-flag-examples', {
    data: [
      {
        name: flag.name,
        enabled: true,
        strategies: flag.strategies.map((s) => {
          const p = strategyPayload(flag.name, s);
          return { ...p, constraints: p.constraints.map((k) => ({ inverted: false, ...k, values: k.values ?? [], operator: k.operator as never })) };
        }),
      },
    ],
  });
  clients.push(c);
  return (role, environment) =>
    c.isEnabled(
      flag.name,
      toUnleashContext(
        { userId: 'a3f1c2de-0000-4000-8000-000000000001', sessionId: 's-1', tokenType: 'rw', role, mcpEnvironment: environment, projectId: 'p', server: 'postgres', tool: 'execute', capability: 'write' },
        { appName: 'killswitch', environment: 'development' },
      ),
    );
}

describe('docs/flags.md: seed 001 strategy for mcp.database.write', () => {
  it('parses as a flag definition and is on in development for every role, in staging only for database_agent and master_agent, never in production', async () => {
    const enabled = await evaluatorFor(exampleBlock());
    expect(enabled('code_agent', 'development')).toBe(true);
    expect(enabled('database_agent', 'development')).toBe(true);
    expect(enabled('database_agent', 'staging')).toBe(true);
    expect(enabled('master_agent', 'staging')).toBe(true);
    expect(enabled('code_agent', 'staging')).toBe(false);
    expect(enabled('database_agent', 'production')).toBe(false);
    expect(enabled('master_agent', 'production')).toBe(false);
  });
});
