// biome-ignore-all lint/suspicious/noTemplateCurlyInString: ${env:NAME} is the config syntax under test, not a template string.
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { pino } from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import { parseGatewayConfig } from '../../src/gateway/config.js';
import { Gateway } from '../../src/gateway/gateway.js';
import { until } from '../helpers/unleash.js';
import { MEMORY_SERVER } from './gateway-harness.js';

// At debug, the gateway logs each stderr line of its upstreams. A server may print what it was given (a
// connection string, its settings): the secrets the gateway handed it arrive masked. The upstream is the
// real server-memory, after a few lines to stderr.

const scratch = mkdtempSync(join(tmpdir(), 'ks-gw-stderr-'));
const chatty = join(scratch, 'chatty.mjs');
writeFileSync(
  chatty,
  [
    "console.error(`settings: ${process.env.DB_PASSWORD}, header-less; arg ${process.argv.slice(2).join(' ')}`);",
    "console.error(`connecting to postgres://app:${process.env.DB_PASSWORD}@db/app`);",
    `await import(${JSON.stringify(pathToFileURL(MEMORY_SERVER).href)});`,
  ].join('\n'),
);
const PASSWORD = 'planted-db-pw-4hx';
const API_KEY = 'planted-api-key-7zq';
let gateway: Gateway | undefined;

afterAll(() => gateway?.close());

describe('upstream stderr in the gateway log', () => {
  it('shows the lines with the env secrets and ${env:...} args masked', { timeout: 30_000 }, async () => {
    const lines: string[] = [];
    const log = pino({ level: 'debug' }, { write: (line: string) => void lines.push(line) });
    const config = parseGatewayConfig(
      JSON.stringify({
        mcpServers: { chatty: { command: process.execPath, args: [chatty, '--api-key=${env:UP_API_KEY}'], env: { DB_PASSWORD: '${env:UP_PASSWORD}', MEMORY_FILE_PATH: join(scratch, 'memory.jsonl') } } },
        killswitch: { url: 'http://127.0.0.1:1', gatewayKey: '${env:K}' },
      }),
      join(scratch, 'gateway.json'),
      { K: 'ksgw_not_checked_here', UP_PASSWORD: PASSWORD, UP_API_KEY: API_KEY },
    );
    gateway = await Gateway.start(config, log);
    await until(() => lines.filter((l) => l.includes('upstream: ')).length >= 2, 10_000, 'the stderr lines');
    const text = lines.join('');
    // The lines are there (else this test proves nothing)...
    expect(text).toContain('upstream: settings: [REDACTED], header-less; arg [REDACTED]');
    expect(text).toContain('upstream: connecting to postgres://app:[REDACTED]@db/app');
    // ...without what was handed over.
    expect(text).not.toContain(PASSWORD);
    expect(text).not.toContain(API_KEY);
  });
});
