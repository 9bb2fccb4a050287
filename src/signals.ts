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
