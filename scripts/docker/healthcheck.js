// Docker's health check of the control plane (the Dockerfile's HEALTHCHECK and docker-compose.yml):
// exit 0 when GET /healthz answers 200 on this container's HOST and PORT. Plain node, because the image
// has neither curl nor wget.
//
// Liveness (/healthz), not readiness (/readyz): Swarm and tools like autoheal replace an unhealthy
// container, and replacing a replica because Postgres, Redis or Unleash is away fixes nothing (the new one
// waits for them too) while it cuts its requests in flight. Readiness is for a load balancer (operations.md).
//
// With TLS_CERT_FILE the API speaks HTTPS only, so the check does too. It asks this container's own
// listener over loopback, while the certificate names the address clients use: the server certificate is
// not verified here (a liveness check authenticates nobody; Kubernetes' HTTPS probes do not verify either).
// Under mutual TLS (TLS_CLIENT_CA_FILE) the listener refuses a connection without a client certificate, so
// the check presents KILLSWITCH_CLIENT_CERT_FILE and KILLSWITCH_CLIENT_KEY_FILE, as the operator CLI does.

import { readFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';

const env = process.env;
const host = env.HOST ?? '';
// A wildcard address listens on loopback too; an IPv6 literal needs brackets in a URL.
const target = host === '' || host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host.includes(':') ? `[${host}]` : host;
const secure = Boolean(env.TLS_CERT_FILE);
const url = `${secure ? 'https' : 'http'}://${target}:${env.PORT || '8080'}/healthz`;

function fail(message) {
  console.error(`${url}: ${message}`);
  process.exit(1);
}

const options = { timeout: 4_000 };
if (secure) {
  options.rejectUnauthorized = false;
  if (env.TLS_CLIENT_CA_FILE) {
    if (!env.KILLSWITCH_CLIENT_CERT_FILE || !env.KILLSWITCH_CLIENT_KEY_FILE) {
      fail('TLS_CLIENT_CA_FILE requires a client certificate on every connection: set KILLSWITCH_CLIENT_CERT_FILE and KILLSWITCH_CLIENT_KEY_FILE in the container to one its CA signed and its key, or override this health check (docs/operations.md, "10. TLS")');
    }
    try {
      options.cert = readFileSync(env.KILLSWITCH_CLIENT_CERT_FILE);
      options.key = readFileSync(env.KILLSWITCH_CLIENT_KEY_FILE);
    } catch (err) {
      fail(`cannot read the client certificate or key (KILLSWITCH_CLIENT_CERT_FILE, KILLSWITCH_CLIENT_KEY_FILE): ${err.message}`);
    }
  }
}

const req = (secure ? https : http).get(url, options, (res) => {
  res.resume();
  if (res.statusCode !== 200) fail(`HTTP ${res.statusCode}`);
  process.exit(0);
});
req.on('timeout', () => req.destroy(new Error(`no answer within ${options.timeout / 1000} s`)));
req.on('error', (err) => fail(err.code ? `${err.code}: ${err.message}` : err.message));
