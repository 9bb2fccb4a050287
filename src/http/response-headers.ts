import type { FastifyInstance } from 'fastify';

/**
 * Headers on every answer, the admin API's included. Its answers carry what operators read (audit rows,
 * tokens, sessions, alerts) and, once, the raw secret of a key just made (POST /v1/keys, /v1/operator-keys,
 * /v1/gateway-keys, rotations): `no-store` keeps them out of the browser's disk cache and any proxy's, so
 * signing out of the admin UI leaves none of it on the operator's machine. A route that sets its own
 * cache-control keeps it (the UI's hashed assets, the alert stream). `nosniff`: a body quoting an agent's
 * string is only ever read as its declared type, never as HTML or script.
 */
export function installResponseHeaders(app: FastifyInstance): void {
  // A callback hook, not an async one: it runs on every decision too, and a promise per answer is not free.
  app.addHook('onSend', (_req, reply, payload, done) => {
    if (!reply.hasHeader('cache-control')) reply.header('cache-control', 'no-store');
    reply.header('x-content-type-options', 'nosniff');
    done(null, payload);
  });
}
