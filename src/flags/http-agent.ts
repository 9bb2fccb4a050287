import http from 'node:http';
import https from 'node:https';
import { isIP } from 'node:net';
import { getDefaultAgent } from 'unleash-client/lib/request.js';

// The agent unleash-client polls and posts metrics with. Its own default sends every request through
// HTTP_PROXY / HTTPS_PROXY unless NO_PROXY names the host (proxy-from-env), loopback included; in a
// container whose environment sets a proxy for the outside world, the polls of the embedded Unleash at
// 127.0.0.1 went to the proxy, which cannot reach this machine's loopback: every fetch failed, the flags
// were never ready (every decision denied) or stale, and the log named the Unleash URL with the proxy's
// refusal. A loopback host is now always reached directly; any other host as unleash-client decides.

/** The options unleash-client gives its own direct agents. */
const AGENT_OPTIONS = { keepAlive: true, keepAliveMsecs: 30_000, timeout: 10_000 };
const direct = { http: new http.Agent(AGENT_OPTIONS), https: new https.Agent(AGENT_OPTIONS) };

/** localhost, *.localhost, 127.0.0.0/8, ::1 (and its IPv4-mapped form): no proxy can reach them for us. */
export function isLoopbackHost(hostname: string): boolean {
  const host = hostname.replace(/^\[(.*)\]$/, '$1').replace(/\.$/, '').toLowerCase();
  if (host === 'localhost' || host.endsWith('.localhost')) return true;
  if (isIP(host) === 4) return host.startsWith('127.');
  if (isIP(host) !== 6) return false;
  // The URL parser writes an IPv6 address one way: ::1, and 127.x.y.z mapped as ::ffff:7fxx:yyzz.
  const canonical = new URL(`http://[${host}]/`).hostname;
  return canonical === '[::1]' || canonical.startsWith('[::ffff:7f');
}

/** For unleash-client's `httpOptions.agent`. */
export function unleashAgent(url: URL): http.Agent {
  if (isLoopbackHost(url.hostname)) return url.protocol === 'https:' ? direct.https : direct.http;
  return getDefaultAgent(url);
}
