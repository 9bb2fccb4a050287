import { type Dispatcher, EnvHttpProxyAgent } from 'undici';
import type { Config } from '../config.js';

// What the control plane's own outbound requests to the outside world go through: HTTPS_PROXY / HTTP_PROXY
// with NO_PROXY, as curl and unleash-client read them, for the alert webhook (Slack, Teams, a pager) and the
// flags sync's admin API calls (a hosted Unleash) from a network whose only way out is a proxy. Node's fetch reads none of them. A loopback destination is
// always reached directly: no proxy can reach this machine's loopback.

const LOOPBACK = ['localhost', '127.0.0.1', '::1', '[::1]'];

/** Undefined when no proxy is set: fetch's own connection pool, as before. */
export function outboundDispatcher(config: Pick<Config, 'httpsProxy' | 'httpProxy' | 'noProxy'>): Dispatcher | undefined {
  if ((!config.httpsProxy && !config.httpProxy) || config.noProxy.trim() === '*') return undefined;
  const noProxy = [config.noProxy, ...LOOPBACK].filter((v) => v !== '').join(',');
  // An empty string, not undefined, for the one not set: undefined would have undici read the environment
  // itself (config.ts is the one reader of it).
  return new EnvHttpProxyAgent({ httpsProxy: config.httpsProxy, httpProxy: config.httpProxy, noProxy });
}
