import { once } from 'node:events';
import { InMemStorageProvider, Unleash, UnleashEvents } from 'unleash-client';

/** What an offline client is started on: the features (and segments) of Unleash's client API. */
export type Bootstrap = NonNullable<ConstructorParameters<typeof Unleash>[0]['bootstrap']>;

/**
 * An unleash-client on bootstrap data, started and ready: no poll (refreshInterval 0), no metrics sent
 * (metricsInterval 0), nothing stored on disk, but counting as the control plane's client does. The caller
 * destroys it.
 */
export async function offlineUnleash(appName: string, bootstrap: Bootstrap): Promise<Unleash> {
  const c = new Unleash({
    appName,
    url: 'http://127.0.0.1:9/api',
    refreshInterval: 0,
    metricsInterval: 0,
    disableAutoStart: true,
    skipInstanceCountWarning: true,
    storageProvider: new InMemStorageProvider(),
    bootstrap,
  });
  c.on('error', () => {});
  c.on('warn', () => {});
  const ready = once(c, UnleashEvents.Ready);
  void c.start();
  await ready;
  return c;
}
