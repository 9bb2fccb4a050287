// biome-ignore-all lint/suspicious/noTemplateCurlyInString: ${env:NAME} is the gateway config syntax under test, not a template string.
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { type GatewaySettings, gatewaySettings, loadConfig, SETTINGS, type SettingSpec } from '../../src/config.js';
import { renderConfigurationDoc } from '../../src/docs/render.js';
import { GatewayConfigError, parseGatewayConfig } from '../../src/gateway/config.js';

// `killswitch gateway` takes KILLSWITCH_URL, KILLSWITCH_GATEWAY_KEY and KILLSWITCH_AGENT_TOKEN from
// src/config.ts (declared in SETTINGS, so documented); src/gateway/config.ts is handed the values.

const file = join(mkdtempSync(join(tmpdir(), 'ks-gw-settings-')), 'gateway.json');
const minimal = JSON.stringify({ mcpServers: { a: { command: 'node' } } });
const spec = (env: string) => (SETTINGS as readonly SettingSpec[]).find((s) => s.env === env);

describe("the gateway's settings", () => {
  it('are declared in SETTINGS, the two credentials as secrets, and so listed in docs/configuration.md', () => {
    expect(spec('KILLSWITCH_GATEWAY_KEY')).toMatchObject({ type: 'string', secret: true });
    expect(spec('KILLSWITCH_AGENT_TOKEN')).toMatchObject({ type: 'string', secret: true });
    expect(spec('KILLSWITCH_GATEWAY_KEY')?.default).toBeUndefined();
    expect(spec('KILLSWITCH_AGENT_TOKEN')?.default).toBeUndefined();
    const doc = renderConfigurationDoc();
    for (const name of ['KILLSWITCH_URL', 'KILLSWITCH_GATEWAY_KEY', 'KILLSWITCH_AGENT_TOKEN']) expect(doc).toContain(`| \`${name}\` |`);
    const c = loadConfig({ KILLSWITCH_GATEWAY_KEY: 'ksgw_k', KILLSWITCH_AGENT_TOKEN: 'mcp_ro_t' });
    expect([c.killswitchGatewayKey, c.killswitchAgentToken]).toEqual(['ksgw_k', 'mcp_ro_t']);
  });

  it("are read by src/config.ts: KILLSWITCH_URL falls back to SETTINGS' one default, empty counts as unset", () => {
    const none = gatewaySettings({});
    expect(none.killswitchUrl).toBe(spec('KILLSWITCH_URL')?.default);
    expect(none.gatewayKey).toBeUndefined();
    expect(none.agentToken).toBeUndefined();
    const env = { KILLSWITCH_URL: 'http://cp:9000', KILLSWITCH_GATEWAY_KEY: 'ksgw_k', KILLSWITCH_AGENT_TOKEN: '', GITHUB_TOKEN: 'ghp_x' };
    const set = gatewaySettings(env);
    expect(set).toMatchObject({ killswitchUrl: 'http://cp:9000', gatewayKey: 'ksgw_k', agentToken: undefined });
    // The whole environment, for `${env:NAME}` references to any variable (an upstream's credential).
    expect(set.referenceEnv).toBe(env);
    // A control-plane setting the gateway does not use never stops it (loadConfig would refuse PORT=x).
    expect(gatewaySettings({ PORT: 'eighty', KILLSWITCH_GATEWAY_KEY: 'ksgw_k' }).gatewayKey).toBe('ksgw_k');
  });

  it('the gateway config uses the values it is handed, and resolves ${env:NAME} against referenceEnv only', () => {
    const settings: GatewaySettings = { killswitchUrl: 'http://cp:7000/', gatewayKey: 'ksgw_handed', agentToken: 'mcp_rw_handed', referenceEnv: {} };
    const cfg = parseGatewayConfig(minimal, file, settings);
    expect(cfg.controlPlane.url).toBe('http://cp:7000');
    expect(cfg.controlPlane.gatewayKey).toBe('ksgw_handed');
    expect(cfg.agentToken).toBe('mcp_rw_handed');

    // The config file's own values win; their references resolve against referenceEnv.
    const own = JSON.stringify({ mcpServers: { a: { command: 'node' } }, killswitch: { url: '${env:CP}', gatewayKey: '${env:KEY}' } });
    const fromFile = parseGatewayConfig(own, file, { ...settings, referenceEnv: { CP: 'http://other:8080', KEY: 'ksgw_from_ref' } });
    expect(fromFile.controlPlane).toMatchObject({ url: 'http://other:8080', gatewayKey: 'ksgw_from_ref' });
    expect(fromFile.agentToken).toBe('mcp_rw_handed');

    // A reference to a variable referenceEnv lacks is a problem, whatever the other settings hold.
    expect(() => parseGatewayConfig(own, file, settings)).toThrow(GatewayConfigError);
    // No gateway key handed and none in the file: the problem names the variable to set.
    try {
      parseGatewayConfig(minimal, file, { ...settings, gatewayKey: undefined });
      expect.unreachable('a config without a gateway key was accepted');
    } catch (err) {
      expect((err as GatewayConfigError).problems.join('\n')).toContain('KILLSWITCH_GATEWAY_KEY');
    }
  });

  it('an invalid KILLSWITCH_URL is the gateway config problem it was, not a ConfigError', () => {
    const problems = (() => {
      try {
        parseGatewayConfig(minimal, file, gatewaySettings({ KILLSWITCH_URL: 'cp:9000', KILLSWITCH_GATEWAY_KEY: 'ksgw_k' }));
      } catch (err) {
        return (err as GatewayConfigError).problems;
      }
      return [];
    })();
    expect(problems).toEqual(['killswitch.url: expected the control plane URL, e.g. http://127.0.0.1:8080']);
  });
});
