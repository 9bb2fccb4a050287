import { InMemStorageProvider, Unleash } from 'unleash-client';
import { afterEach, describe, expect, it } from 'vitest';
import { holdPollInterval } from '../../src/flags/poll-interval.js';

// A tripwire for the unleash-client internals poll-interval.ts relies on: an upgrade that moves them
// fails here, naming what moved, instead of silently bringing back the poll back-off.

const REFRESH_MS = 250;
const clients: Unleash[] = [];

function client(): Unleash {
  const c = new Unleash({
    appName: 'poll-interval-test',
    url: 'http://127.0.0.1:9/api',
    refreshInterval: REFRESH_MS,
    disableAutoStart: true,
    disableMetrics: true,
    skipInstanceCountWarning: true,
    storageProvider: new InMemStorageProvider(),
  });
  clients.push(c);
  return c;
}

/** The SDK's own handling of an HTTP answer: what fetch() calls, returning the delay to the next poll. */
function nextPollAfter(c: Unleash, status: number): number {
  const fetcher = (c as unknown as { repository: { fetcher: { pollingFetcher: { handleErrorCases(url: string, status: number): number } } } }).repository.fetcher.pollingFetcher;
  return fetcher.handleErrorCases('http://127.0.0.1:9/api/client/features', status);
}

afterEach(() => {
  for (const c of clients.splice(0)) c.destroy();
});

describe('poll interval after Unleash errors', () => {
  it('unleash-client backs off on its own (what holdPollInterval exists for)', () => {
    const c = client();
    expect(nextPollAfter(c, 502)).toBe(2 * REFRESH_MS);
    expect(nextPollAfter(c, 503)).toBe(3 * REFRESH_MS);
  });

  it('unleash-client stops polling for good after a 401 or 403 (0: no next poll)', () => {
    const c = client();
    c.on('error', () => {});
    expect(nextPollAfter(c, 401)).toBe(0);
    expect(nextPollAfter(c, 403)).toBe(0);
  });

  it('holds the next poll at the refresh interval after 404, 429 and 5xx answers', () => {
    const c = client();
    expect(holdPollInterval(c, REFRESH_MS)).toEqual({ held: true });
    for (let i = 0; i < 12; i++) for (const status of [404, 429, 500, 502, 503, 504]) expect(nextPollAfter(c, status)).toBe(REFRESH_MS);
  });

  it('unleash-client stops sending usage metrics for good after a 401 or 403; held, it keeps them scheduled', () => {
    type MetricsInternals = { configurationError(url: string, status: number): void; disabled: boolean; timer?: unknown };
    const metricsOf = (c: Unleash) => (c as unknown as { metrics: MetricsInternals }).metrics;
    const plain = client();
    plain.on('warn', () => {});
    metricsOf(plain).configurationError('http://127.0.0.1:9/api/client/metrics', 401);
    expect(metricsOf(plain).disabled).toBe(true);

    const held = client();
    const warnings: string[] = [];
    held.on('warn', (msg: string) => warnings.push(msg));
    expect(holdPollInterval(held, REFRESH_MS)).toEqual({ held: true });
    const m = metricsOf(held);
    m.disabled = false; // as after start() (the test clients are built with metrics disabled)
    m.configurationError('http://127.0.0.1:9/api/client/metrics', 403);
    expect(m.disabled).toBe(false);
    expect(m.timer).toBeDefined();
    expect(warnings.at(-1)).toMatch(/responded 403: Unleash refuses UNLEASH_API_TOKEN for usage metrics/);
  });

  it('keeps polling after a 401 or 403, saying which token Unleash refuses', () => {
    const c = client();
    const errors: string[] = [];
    c.on('error', (err: Error) => errors.push(err.message));
    expect(holdPollInterval(c, REFRESH_MS)).toEqual({ held: true });
    for (const status of [401, 403, 401]) expect(nextPollAfter(c, status)).toBe(REFRESH_MS);
    expect(errors).toHaveLength(3);
    expect(errors[1]).toMatch(/responded 403: Unleash refuses UNLEASH_API_TOKEN .* polling again every 250 ms/);
  });

  it('reports, rather than pretends, when the internals are not there', () => {
    const c = client();
    const repository = (c as unknown as { repository: { fetcher: unknown } }).repository;
    const fetcher = repository.fetcher;
    repository.fetcher = {};
    expect(holdPollInterval(c, REFRESH_MS)).toEqual({ held: false, why: expect.stringMatching(/pollingFetcher/) });
    repository.fetcher = fetcher;
  });
});
