import { copyFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, checkStartConfig, loadConfig, serverTlsOptions } from '../../src/config.js';
import { webhookUndeliverable, webhookUrl } from '../../src/flags/setup.js';
import { parseGatewayConfig } from '../../src/gateway/config.js';
import { makeTlsFiles, type TlsFiles } from '../helpers/tls.js';

// TLS_CERT_FILE, TLS_KEY_FILE and TLS_CLIENT_CA_FILE: opt-in HTTPS and mutual TLS on PORT. Every refusal
// names the setting (and the path) at fault, so `killswitch start` and `config check` exit 2 with it.

let pki: TlsFiles;
beforeAll(() => {
  pki = makeTlsFiles();
});
afterAll(() => pki.remove());

function refusal(env: Record<string, string>): ConfigError {
  let err: unknown;
  try {
    checkStartConfig(loadConfig(env));
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(ConfigError);
  return err as ConfigError;
}

describe('TLS settings', () => {
  it('are off by default: plain HTTP, nothing read', () => {
    const c = loadConfig({});
    expect([c.tlsCertFile, c.tlsKeyFile, c.tlsClientCaFile]).toEqual(['', '', '']);
    expect(serverTlsOptions(c)).toBeUndefined();
  });

  it('a certificate and its key serve HTTPS without asking clients for a certificate', () => {
    const tls = serverTlsOptions(loadConfig({ TLS_CERT_FILE: pki.serverCert, TLS_KEY_FILE: pki.serverKey }));
    expect(tls).toMatchObject({ requestCert: false, rejectUnauthorized: false });
    expect(tls?.cert.toString()).toContain('BEGIN CERTIFICATE');
    expect(tls?.ca).toBeUndefined();
  });

  it('TLS_CLIENT_CA_FILE requires and verifies client certificates signed by that CA', () => {
    const tls = serverTlsOptions(loadConfig({ TLS_CERT_FILE: pki.serverCert, TLS_KEY_FILE: pki.serverKey, TLS_CLIENT_CA_FILE: pki.ca }));
    expect(tls).toMatchObject({ requestCert: true, rejectUnauthorized: true });
    expect(tls?.ca?.toString()).toContain('BEGIN CERTIFICATE');
  });

  it('one of the certificate and the key without the other is refused, naming the one missing', () => {
    const noKey = refusal({ TLS_CERT_FILE: pki.serverCert });
    expect(noKey.variable).toBe('TLS_KEY_FILE');
    expect(noKey.message).toMatch(/^TLS_CERT_FILE is set but TLS_KEY_FILE is not.*set both or neither/);
    const noCert = refusal({ TLS_KEY_FILE: pki.serverKey });
    expect(noCert.variable).toBe('TLS_CERT_FILE');
    expect(noCert.message).toMatch(/^TLS_KEY_FILE is set but TLS_CERT_FILE is not/);
  });

  it('TLS_CLIENT_CA_FILE without a certificate and key of the server is refused', () => {
    const err = refusal({ TLS_CLIENT_CA_FILE: pki.ca });
    expect(err.variable).toBe('TLS_CLIENT_CA_FILE');
    expect(err.message).toContain('TLS_CERT_FILE and TLS_KEY_FILE are not');
  });

  it('a missing or unreadable file is refused naming the setting and the path', () => {
    const missing = join(pki.dir, 'nope.pem');
    for (const [env, extra] of [
      ['TLS_CERT_FILE', { TLS_KEY_FILE: pki.serverKey }],
      ['TLS_KEY_FILE', { TLS_CERT_FILE: pki.serverCert }],
      ['TLS_CLIENT_CA_FILE', { TLS_CERT_FILE: pki.serverCert, TLS_KEY_FILE: pki.serverKey }],
    ] as const) {
      const err = refusal({ ...extra, [env]: missing });
      expect(err.variable, env).toBe(env);
      expect(err.message, env).toContain(`${env}=${missing}: cannot read the file (ENOENT: no such file)`);
    }
    const dir = refusal({ TLS_CERT_FILE: pki.dir, TLS_KEY_FILE: pki.serverKey });
    expect(dir.variable).toBe('TLS_CERT_FILE');
    expect(dir.message).toContain(`TLS_CERT_FILE=${pki.dir}: cannot read the file (EISDIR)`);
  });

  it('a file that holds no PEM certificate or key, or a key of another certificate, is refused naming it', () => {
    const garbage = join(pki.dir, 'garbage.pem');
    writeFileSync(garbage, 'not a certificate\n');
    const notCert = refusal({ TLS_CERT_FILE: garbage, TLS_KEY_FILE: pki.serverKey });
    expect(notCert.variable).toBe('TLS_CERT_FILE');
    expect(notCert.message).toContain(`TLS_CERT_FILE=${garbage}: holds no PEM certificate`);
    // A certificate given as the key: a common mix-up.
    const notKey = refusal({ TLS_CERT_FILE: pki.serverCert, TLS_KEY_FILE: pki.serverCert });
    expect(notKey.variable).toBe('TLS_KEY_FILE');
    expect(notKey.message).toContain(`TLS_KEY_FILE=${pki.serverCert}: not an unencrypted PEM private key`);
    const otherKey = refusal({ TLS_CERT_FILE: pki.serverCert, TLS_KEY_FILE: pki.clientKey });
    expect(otherKey.variable).toBe('TLS_KEY_FILE');
    expect(otherKey.message).toContain(`TLS_KEY_FILE=${pki.clientKey}: not the private key of the certificate in TLS_CERT_FILE (${pki.serverCert}, CN=localhost)`);
    const notCa = refusal({ TLS_CERT_FILE: pki.serverCert, TLS_KEY_FILE: pki.serverKey, TLS_CLIENT_CA_FILE: garbage });
    expect(notCa.variable).toBe('TLS_CLIENT_CA_FILE');
  });
});

describe('the Unleash webhook with TLS', () => {
  it('defaults to https://HOST:PORT when the API is served with TLS_CERT_FILE (PUBLIC_URL still wins)', () => {
    expect(webhookUrl(loadConfig({ HOST: '0.0.0.0', PORT: '8443' }))).toBe('http://127.0.0.1:8443/v1/flags/events');
    const tls = { TLS_CERT_FILE: pki.serverCert, TLS_KEY_FILE: pki.serverKey };
    expect(webhookUrl(loadConfig({ ...tls, HOST: '0.0.0.0', PORT: '8443' }))).toBe('https://127.0.0.1:8443/v1/flags/events');
    expect(webhookUrl(loadConfig({ ...tls, PUBLIC_URL: 'https://killswitch.internal' }))).toBe('https://killswitch.internal/v1/flags/events');
  });

  it('is not registered at start under mutual TLS unless PUBLIC_URL names where Unleash can post', () => {
    const mtls = { TLS_CERT_FILE: pki.serverCert, TLS_KEY_FILE: pki.serverKey, TLS_CLIENT_CA_FILE: pki.ca };
    expect(webhookUndeliverable(loadConfig({ TLS_CERT_FILE: pki.serverCert, TLS_KEY_FILE: pki.serverKey }))).toBeUndefined();
    expect(webhookUndeliverable(loadConfig(mtls))).toContain('the Unleash webhook is not registered: TLS_CLIENT_CA_FILE');
    expect(webhookUndeliverable(loadConfig({ ...mtls, PUBLIC_URL: 'https://ingress.internal' }))).toBeUndefined();
  });
});

describe('gateway config: killswitch.tls', () => {
  const parse = (killswitch: Record<string, unknown>) =>
    parseGatewayConfig(JSON.stringify({ mcpServers: { fs: { command: 'node', args: ['server.js'] } }, killswitch }), join(pki.dir, 'gateway.json'), { KILLSWITCH_GATEWAY_KEY: 'ksgw_test' });
  const problems = (killswitch: Record<string, unknown>): string[] => {
    try {
      parse(killswitch);
    } catch (err) {
      return (err as { problems: string[] }).problems;
    }
    return [];
  };

  it('loads the CA and the client certificate and key, paths relative to the config file', () => {
    copyFileSync(pki.ca, join(pki.dir, 'relative-ca.pem'));
    const cfg = parse({ url: 'https://cp.internal:8443', tls: { caFile: 'relative-ca.pem', certFile: pki.clientCert, keyFile: pki.clientKey } });
    expect(cfg.controlPlane.url).toBe('https://cp.internal:8443');
    expect(cfg.controlPlane.tls?.ca?.toString()).toContain('BEGIN CERTIFICATE');
    expect(cfg.controlPlane.tls?.cert?.toString()).toContain('BEGIN CERTIFICATE');
    expect(cfg.controlPlane.tls?.key?.toString()).toContain('PRIVATE KEY');
    expect(parse({ url: 'https://cp.internal:8443' }).controlPlane.tls).toBeUndefined();
  });

  it('names the key and the path of a file that cannot be used, and refuses tls with an http:// control plane', () => {
    const missing = join(pki.dir, 'missing.pem');
    expect(problems({ url: 'https://cp.internal', tls: { caFile: missing } })).toEqual([`killswitch.tls.caFile: ${missing}: cannot read the file (ENOENT: no such file)`]);
    expect(problems({ url: 'https://cp.internal', tls: { certFile: pki.clientCert } })).toEqual([
      'killswitch.tls: give both certFile and keyFile (the client certificate for mutual TLS and its private key), or neither',
    ]);
    expect(problems({ url: 'https://cp.internal', tls: { certFile: pki.clientCert, keyFile: pki.serverKey } })).toEqual([
      'killswitch.tls.keyFile: not the private key of the certificate in killswitch.tls.certFile',
    ]);
    expect(problems({ url: 'https://cp.internal', tls: { certFile: pki.clientCert, keyFile: pki.clientCert } })[0]).toMatch(/^killswitch\.tls\.keyFile: .*client\.pem: not an unencrypted PEM private key/);
    expect(problems({ url: 'http://cp.internal:8080', tls: { caFile: pki.ca } })).toEqual([
      'killswitch.tls: only used with an https:// control plane URL, and killswitch.url (or KILLSWITCH_URL) is http://cp.internal:8080',
    ]);
  });
});
