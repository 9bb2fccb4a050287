import type { IncomingMessage } from 'node:http';

/** How much of a too-large body is read and thrown away before the 413: 4× the limit, at most 16 MiB. */
export function discardCap(bodyLimit: number): number {
  return Math.min(4 * bodyLimit, 16 * 1024 * 1024);
}

/** How long the rest of a too-large body may take to arrive: a slow sender is not waited for. */
export const DISCARD_MAX_MS = 10_000;

/**
 * Reads and throws away what is left of a request body Fastify refused as too large, so the 413 reaches
 * a client that writes its whole body before it reads (Python's urllib, most HTTP libraries): answered
 * while it is still uploading, the connection is closed under it and it reports a broken pipe or a reset,
 * which a gateway reads as "control plane unreachable". Resolves when the body has ended, or at once when
 * its declared length is over `cap`; stops reading when more than `cap` bytes arrive or `maxMs` passes
 * (the 413 is then sent and the connection closed, as before). Nothing read is kept.
 */
export function discardRestOfBody(raw: IncomingMessage, cap: number, maxMs = DISCARD_MAX_MS): Promise<void> {
  if (raw.complete || raw.destroyed) return Promise.resolve();
  const declared = Number(raw.headers['content-length']);
  if (Number.isFinite(declared) && declared > cap) return Promise.resolve();
  return new Promise((resolve) => {
    let seen = 0;
    const timer = setTimeout(done, maxMs);
    timer.unref();
    function onData(chunk: Buffer) {
      seen += chunk.length;
      if (seen > cap) done();
    }
    function done() {
      clearTimeout(timer);
      raw.removeListener('data', onData);
      raw.removeListener('end', done);
      raw.removeListener('error', done);
      raw.removeListener('close', done);
      resolve();
    }
    raw.on('data', onData);
    raw.once('end', done);
    raw.once('error', done);
    raw.once('close', done);
    raw.resume();
  });
}
