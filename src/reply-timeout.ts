/**
 * A timeout for an answer that comes over a socket (a Postgres reply, the control plane's answer to a
 * gateway), which never fails an answer that has already arrived.
 *
 * A plain timer does: each turn of Node's event loop runs the timers that are due before it reads the
 * sockets, so after the loop was held longer than the timeout (a burst of requests, a CPU-heavy one, a
 * machine short of CPU, a long GC) every wait in flight failed as timed out although its answer was
 * waiting in the socket. Here the timer lets the sockets be read once before it calls `expire` (a
 * setImmediate runs right after that read), and `expire` is not called if `settled()` says the answer was
 * used by then. A timer that fired later than the timeout itself (the loop was held) gives the wait one more
 * full timeout from then: an answer sent during the stall, or just after it, is used too. A peer that does
 * not answer fails as before, at most one turn of the event loop late, or one more timeout late after a
 * stall of our own. The same rule as the Redis commands' (src/redis/client.ts; docs/performance.md,
 * "Overload"; docs/adr/0029-timeouts-read-the-socket-first.md).
 *
 * The returned timer is the only one (the extension refreshes it): clearTimeout on it cancels the wait at
 * any time. Costs one timer, one closure and one clock read per wait, as the timer it replaces did, plus a
 * setImmediate when it fires.
 */
export function timeoutAfterReads(ms: number, settled: () => boolean, expire: () => void): NodeJS.Timeout {
  let due = performance.now() + ms;
  let extended = false;
  const timer: NodeJS.Timeout = setTimeout(() => {
    const late = performance.now() - due;
    setImmediate(() => {
      if (settled()) return;
      if (!extended && late >= ms) {
        extended = true;
        due = performance.now() + ms;
        timer.refresh();
        return;
      }
      expire();
    });
  }, ms);
  return timer;
}
