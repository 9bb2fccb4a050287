import { randomBytes } from 'node:crypto';
import type { IncomingMessage } from 'node:http';

/** The longest X-Request-Id taken from a client (a load balancer's, a gateway's); longer ones are replaced. */
export const MAX_REQUEST_ID_LENGTH = 128;

// Visible ASCII, no spaces: UUIDs, W3C trace ids, nginx's $request_id, Envoy's and Heroku's ids all pass.
const ACCEPTED = new RegExp(`^[\\x21-\\x7e]{1,${MAX_REQUEST_ID_LENGTH}}$`);

/**
 * Fastify's `genReqId`: the request id every log line of a request carries (`reqId`) and a 500's message
 * names. Fastify's default, `req-1`, `req-2` ..., starts again in every process, so each replica and each
 * restart had its own `req-2f`: the id a user read in an error matched lines of every pod. Ours are
 * `<8 random characters of this app instance>-<counter>`, as cheap per request. A client's X-Request-Id is
 * kept when it is visible ASCII of at most 128 characters; Fastify's `requestIdHeader` took any value,
 * so any client could put 16 KB of its choice into every line of its requests.
 */
export function requestIdGenerator(): (req: IncomingMessage) => string {
  const prefix = randomBytes(6).toString('base64url');
  let next = 0;
  return (req) => {
    const given = req.headers['x-request-id'];
    if (typeof given === 'string' && ACCEPTED.test(given)) return given;
    next++;
    return `${prefix}-${next.toString(36)}`;
  };
}
