'use strict';
// Runs unleash-server 7.5.1 in its own process. The control plane (src/flags/embedded.ts) spawns this
// file instead of importing unleash-server, because in-process Unleash installs SIGINT/SIGTERM handlers
// that exit the whole process and registers prom-client default metrics globally.
//
// Input: the standard Unleash environment variables (DATABASE_URL, HTTP_PORT, HTTP_HOST,
// INIT_ADMIN_API_TOKENS, INIT_BACKEND_API_TOKENS, UNLEASH_DEFAULT_ADMIN_PASSWORD, SEND_TELEMETRY, ...)
// prepared by the parent, plus KS_UNLEASH_ADDON_CACHE_MS.
// Output over the IPC channel: {type: 'ready', port} once Unleash listens, {type: 'failed', message}.
// The process exits when the parent goes away (IPC disconnect), so a crashed control plane or test run
// never leaves an orphaned Unleash behind.

const send = (msg) => {
  if (process.send && process.connected) process.send(msg);
};

process.on('disconnect', () => process.kill(process.pid, 'SIGTERM'));

// unleash-server 7.5.1 (pinned: the last release for Node 20) runs queries on a pg client that is still
// busy, and pg 8 prints "DeprecationWarning: Calling client.query() when the client is already executing
// a query" on our stderr at every start. An operator can do nothing about it, and it reads like a fault of
// the control plane; other warnings still print.
process.noDeprecation = true;

function tokensFrom(list, type) {
  // Same format as Unleash's INIT_*_API_TOKENS: "project:environment.secret".
  return (list || '')
    .split(/,\s?/)
    .filter(Boolean)
    .map((secret) => {
      const [project = '*', rest = ''] = secret.split(':');
      const [environment = '*'] = rest.split('.');
      return { secret, type, projects: [project], environment, tokenName: `killswitch-${type}` };
    });
}

/**
 * INIT_*_API_TOKENS are only applied to an empty token table. Tokens from config that are missing
 * (the configuration changed after the first start) are added, so the control plane can always connect.
 */
async function ensureConfiguredTokens(unleash) {
  const service = unleash.services?.apiTokenService;
  if (!service || typeof service.getToken !== 'function' || typeof service.insertNewApiToken !== 'function') return;
  const wanted = [...tokensFrom(process.env.INIT_ADMIN_API_TOKENS, 'admin'), ...tokensFrom(process.env.INIT_BACKEND_API_TOKENS, 'backend')];
  for (const token of wanted) {
    if (await service.getToken(token.secret)) continue;
    await service.insertNewApiToken(token, { username: 'killswitch', id: -1337, ip: '' });
  }
}

/**
 * Unleash caches the list of integrations for one minute, so a webhook registered by `flags sync` right
 * after boot could stay silent for that long. The embedded server is ours: shorten the cache.
 */
async function shortenAddonCache(unleash, maxAgeMs) {
  const service = unleash.services?.addonService;
  if (!service || typeof service.fetchAddonConfigs !== 'function' || !service.addonStore) return;
  let cached;
  let cachedAt = 0;
  service.fetchAddonConfigs = async () => {
    if (!cached || Date.now() - cachedAt > maxAgeMs) {
      cached = await service.addonStore.getAll({ enabled: true });
      cachedAt = Date.now();
    }
    return cached;
  };
}

async function main() {
  const { start } = await import('unleash-server');
  const unleash = await start({
    versionCheck: { enable: false },
    authentication: {
      initialAdminUser: { username: 'admin', password: process.env.UNLEASH_DEFAULT_ADMIN_PASSWORD || 'unleash4all' },
    },
  });
  await ensureConfiguredTokens(unleash);
  await shortenAddonCache(unleash, Number(process.env.KS_UNLEASH_ADDON_CACHE_MS || 1000));
  const address = unleash.server?.address();
  send({ type: 'ready', port: address && typeof address === 'object' ? address.port : undefined });
}

main().catch((err) => {
  send({ type: 'failed', message: err?.message || String(err) });
  console.error(err);
  process.exit(1);
});
