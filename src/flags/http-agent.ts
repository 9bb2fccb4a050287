import http from 'node:http';
import https from 'node:https';
import { getDefaultAgent } from 'unleash-client/lib/request.js';
import { isLoopbackHost } from '../loopback.js';

// The agent unleash-client polls and posts metrics with. Its own default sends every request through
// HTTP_PROXY / HTTPS_PROXY unless NO_PROXY names the host (proxy-from-env), loopback included; in a
// container whose environment sets a proxy for the outside world, the polls of the embedded Unleash at
// 127.0.0.1 went to the proxy, which cannot reach this machine's loopback: every fetch failed, the flags
// were never ready (every decision denied) or stale, and the log named the Unleash URL with the proxy's
// refusal. A loopback host is now always reached directly; any other host as unleash-client decides.

/** The options unleash-client gives its own direct agents. */
const AGENT_OPTIONS = { keepAlive: true, keepAliveMsecs: 30_000, timeout: 10_000 };
const direct = { http: new http.Agent(AGENT_OPTIONS), https: new https.Agent(AGENT_OPTIONS) };

/** For unleash-client's `httpOptions.agent`. */
export function unleashAgent(url: URL): http.Agent {
  if (isLoopbackHost(url.hostname)) return url.protocol === 'https:' ? direct.https : direct.http;
  return getDefaultAgent(url);
}
