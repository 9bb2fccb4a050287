import type { Unleash } from 'unleash-client';

// unleash-client 6 backs off after a 404, 429 or 5xx answer: every failed poll raises a failure count,
// the next poll waits refreshInterval × (failures + 1) (up to 11×), and after Unleash recovers the count
// only steps down by one per successful poll. After ten 502s from a proxy, polls would run 11 s, 10 s,
// 9 s … apart for a minute, exactly when an operator is turning flags off. The control plane promises
// that a flag turned off is seen within about a second, so it polls every UNLEASH_REFRESH_MS whatever
// Unleash answered: one request per replica per interval, as when it is healthy (the SDK still retries
// a failed request twice, 1 s and then up to 2 s later, before it counts as a failed poll).
//
// The SDK has no option for this. Forcing a fetch from outside (Repository.fetch(), as a watchdog would)
// is no way out either: every fetch schedules its own next poll and a pending one is not replaced, so
// each forced fetch would add a polling loop that never ends. What is left is the counter itself, the
// PollingFetcher's private `failures`, which the back-off and the step-down both read: it is pinned at
// 0. That reaches into unleash-client internals (checked against 6.12), so every step is checked here
// and the service logs an error when one fails; test/unit/flags-poll-interval.test.ts fails on an
// upgrade that moves them, and test/integration/flags-poll-errors.unleash-lane.ts on one that backs off
// some other way.
//
// A 401 or 403 is worse: the SDK stops polling for good ("Stopping refresh of toggles"). A client token
// deleted by mistake in the Unleash UI and then restored, or a proxy that briefly answers 403, would
// leave every replica on its last flags until someone restarts it: the kill switch in the Unleash UI
// would do nothing, silently but for the staleness alarm. So the same fetcher's `configurationError`
// (what the SDK calls for 401/403; it returns 0, meaning "no next poll") is replaced: it reports the
// refusal and polls again one interval later, like any other error answer. The usage metrics reporter
// stops for good on a 401/403 as well; its `configurationError` is replaced the same way.

interface PollingFetcherInternals {
  failures?: unknown;
  nextFetch?: () => number;
  configurationError?: (url: string, statusCode: number) => number;
  emit?: (event: string, ...args: unknown[]) => boolean;
}

interface MetricsInternals {
  configurationError?: (url: string, statusCode: number) => void;
  startTimer?: () => void;
  emit?: (event: string, ...args: unknown[]) => boolean;
}

/** The message of the error the client emits when Unleash refuses its API token (401/403). */
export function tokenRefusedMessage(url: string, statusCode: number, refreshMs: number): string {
  return `${url} responded ${statusCode}: Unleash refuses UNLEASH_API_TOKEN (a client token of this environment); polling again every ${refreshMs} ms until it is accepted`;
}

export type PollIntervalHold = { held: true } | { held: false; why: string };

/** Keeps the client's poll at its refreshInterval after error answers. Call before the client starts. */
export function holdPollInterval(client: Unleash, refreshMs: number): PollIntervalHold {
  const repository = (client as unknown as { repository?: { fetcher?: { pollingFetcher?: PollingFetcherInternals } } }).repository;
  const fetcher = repository?.fetcher?.pollingFetcher;
  if (!fetcher) return { held: false, why: 'unleash-client has no repository.fetcher.pollingFetcher' };
  const failures = Object.getOwnPropertyDescriptor(fetcher, 'failures');
  if (!failures || !('value' in failures) || typeof failures.value !== 'number' || failures.configurable !== true) {
    return { held: false, why: 'the polling fetcher has no plain numeric `failures` counter' };
  }
  if (typeof fetcher.nextFetch !== 'function') return { held: false, why: 'the polling fetcher has no nextFetch()' };
  if (typeof fetcher.configurationError !== 'function' || typeof fetcher.emit !== 'function') {
    return { held: false, why: 'the polling fetcher has no configurationError() or emit(): a 401/403 may stop polling' };
  }
  Object.defineProperty(fetcher, 'failures', { configurable: true, enumerable: true, get: () => 0, set: () => {} });
  // The counter is now stuck at 0: a write (as a back-off does) must leave the next poll one interval away.
  fetcher.failures = 10;
  const next = fetcher.nextFetch();
  if (next !== refreshMs) return { held: false, why: `after pinning the failure counter the next poll is ${next} ms away, not ${refreshMs} ms` };
  const emit = fetcher.emit.bind(fetcher);
  fetcher.configurationError = (url: string, statusCode: number) => {
    emit('error', new Error(tokenRefusedMessage(url, statusCode, refreshMs)));
    return refreshMs;
  };
  // The usage metrics the client sends (what the Unleash UI shows as the flags' use and this
  // application's instances) stop for good on a 401/403 too: keep their schedule instead.
  const metrics = (client as unknown as { metrics?: MetricsInternals }).metrics;
  if (typeof metrics?.configurationError !== 'function' || typeof metrics.startTimer !== 'function' || typeof metrics.emit !== 'function') {
    return { held: false, why: 'the metrics reporter has no configurationError(), startTimer() or emit(): a 401/403 may stop usage metrics' };
  }
  const startTimer = metrics.startTimer.bind(metrics);
  const warn = metrics.emit.bind(metrics);
  metrics.configurationError = (url: string, statusCode: number) => {
    warn('warn', `${url} responded ${statusCode}: Unleash refuses UNLEASH_API_TOKEN for usage metrics; sending them again at the next interval`);
    startTimer();
  };
  return { held: true };
}
