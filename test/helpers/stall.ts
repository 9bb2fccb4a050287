/** Holds the event loop for `ms`, as a burst of work or a machine short of CPU does. */
export function stall(ms: number): void {
  const end = performance.now() + ms;
  while (performance.now() < end) {
    // busy
  }
}
