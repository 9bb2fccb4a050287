// biome-ignore-all lint/suspicious/noTemplateCurlyInString: ${env:NAME} is the config syntax under test, not a template string.
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { parseGatewayConfig } from '../../src/gateway/config.js';
import { Gateway } from '../../src/gateway/gateway.js';

// `killswitch gateway` prints why an upstream did not start (stderr, and the desktop client's log). Its
// resolved args and URL may hold secrets the config wisely reads from ${env:...}: they are named as the
// control plane gets them (the reference, a URL without its credentials or query), never resolved.

const scratch = mkdtempSync(join(tmpdir(), 'ks-gw-start-error-'));
const exits = join(scratch, 'exits.mjs');
writeFileSync(exits, 'process.exit(3);\n');
const SECRET = 'planted-upstream-secret-9k2';

async function startError(mcpServers: Record<string, unknown>): Promise<string> {
  const config = parseGatewayConfig(JSON.stringify({ mcpServers, killswitch: { url: 'http://127.0.0.1:1', gatewayKey: '${env:K}', startTimeoutMs: 5_000 } }), join(scratch, 'gateway.json'), {
    K: 'ksgw_not_checked_here',
    UP_PASSWORD: SECRET,
    UP_URL: `http://user:${SECRET}@127.0.0.1:1/mcp?api_key=${SECRET}`,
  });
  const err = await Gateway.start(config, pino({ level: 'silent' })).then(
    () => undefined,
    (e: Error) => e,
  );
  expect(err?.name).toBe('GatewayStartError');
  return err!.message;
}

describe('an upstream that does not start', () => {
  it('is named without the secrets of its args (command) or its URL (Streamable HTTP)', { timeout: 30_000 }, async () => {
    const command = await startError({ broken: { command: process.execPath, args: [exits, '--password=${env:UP_PASSWORD}'] } });
    expect(command).toContain(`upstream broken did not start (${process.execPath} ${exits} --password=\${env:UP_PASSWORD})`);
    expect(command).not.toContain(SECRET);
    const http = await startError({ remote: { url: '${env:UP_URL}' } });
    expect(http).toContain('upstream remote did not start (http://127.0.0.1:1/mcp)');
    expect(http).not.toContain(SECRET);
  });
});
