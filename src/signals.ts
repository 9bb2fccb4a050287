// How a process that stops on SIGINT/SIGTERM tells the first signal delivered twice from a second one:
// `killswitch start` (server.ts), its WORKERS > 1 primary (cluster.ts) and `killswitch gateway`.

/**
 * The same signal again within this long is the first one delivered twice, not a second one. `npm start`
 * and `npx killswitch ...` do that on a Ctrl-C: the terminal sends SIGINT to npm and to node (the start
 * script execs node), and npm forwards the SIGINT it got to its script's process a few milliseconds later
 * (12–16 ms measured). Taken as a second signal, that copy would end every such Ctrl-C without the drain.
 */
export const SIGNAL_REPEAT_MS = 500;

/** Returns a check that answers true for a signal that repeats the first one within SIGNAL_REPEAT_MS. */
export function signalRepeats(): (signal: NodeJS.Signals) => boolean {
  let first: { signal: NodeJS.Signals; at: number } | undefined;
  return (signal) => {
    if (!first) {
      first = { signal, at: Date.now() };
      return false;
    }
    return signal === first.signal && Date.now() - first.at < SIGNAL_REPEAT_MS;
  };
}

/** The exit code of a process ended at once by a second signal, as a shell reports death by it. */
export const exitCodeOf = (signal: NodeJS.Signals): number => (signal === 'SIGINT' ? 130 : 143);

/** Something that logs at info (a pino Logger). */
interface InfoLog {
  info(fields: object, message: string): void;
}

/**
 * The SIGINT/SIGTERM handler every long-running command shares: the first signal begins the stop
 * (`first`), the same one again within SIGNAL_REPEAT_MS is only logged (its copy from npm), any other
 * later one is `second` (which exits at once).
 */
export function stopSignalHandler(log: InfoLog, first: (signal: NodeJS.Signals) => void, second: (signal: NodeJS.Signals) => void): (signal: NodeJS.Signals) => void {
  const repeats = signalRepeats();
  let begun = false;
  return (signal) => {
    if (repeats(signal)) {
      log.info({ signal, within_ms: SIGNAL_REPEAT_MS }, 'the same signal again at once: taken as the first one delivered twice (npm forwards a Ctrl-C the terminal sent too), not as a second signal');
      return;
    }
    if (begun) return second(signal);
    begun = true;
    first(signal);
  };
}
