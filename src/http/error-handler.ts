import { STATUS_CODES } from 'node:http';
import type { Duplex } from 'node:stream';
import type { FastifyBaseLogger, FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { isQueryTimeout } from '../db/pool.js';
import { AppError, ERROR_CODES, type ErrorCode, type FieldProblem, SERVICE_UNAVAILABLE_RETRY_AFTER_S } from '../errors.js';
import { discardCap, discardRestOfBody } from './body-limit.js';
import { setResponseHeaders } from './response-headers.js';

interface ValidationIssue {
  instancePath?: string;
  keyword?: string;
  message?: string;
  params?: Record<string, unknown>;
  /** The failing keyword's schema object (Ajv `verbose`). */
  parentSchema?: { description?: unknown };
}

function fieldOf(context: string, issue: ValidationIssue): string {
  const path = (issue.instancePath ?? '').replace(/^\//, '').replace(/\//g, '.');
  const extra = (issue.params?.['missingProperty'] ?? issue.params?.['additionalProperty']) as string | undefined;
  const parts = [path, extra].filter(Boolean).join('.');
  return parts || context;
}

function problemOf(issue: ValidationIssue): string {
  if (issue.keyword === 'additionalProperties') return 'is not an accepted field';
  if (issue.keyword === 'required') return 'is required';
  // A long pattern says nothing to a person: its field's description says what is accepted.
  const description = issue.parentSchema?.description;
  if (issue.keyword === 'pattern' && typeof description === 'string' && description !== '') return `is not accepted: ${description}`;
  return issue.message ?? 'is invalid';
}

const shown = (v: unknown) => JSON.stringify(v);

/**
 * One problem per field. A union of literals (`environment`, `status` ...) fails once per literal plus
 * once for the union ("must be equal to constant" three times, then "must match a schema in anyOf"): those
 * become one "must be one of ..." listing what is accepted.
 */
export function problemsOf(context: string, issues: readonly ValidationIssue[]): FieldProblem[] {
  const out: FieldProblem[] = [];
  const allowed = new Map<string, unknown[]>();
  for (const issue of issues) {
    const field = fieldOf(context, issue);
    if (issue.keyword === 'const' || issue.keyword === 'enum') {
      const values = issue.keyword === 'const' ? [issue.params?.['allowedValue']] : ((issue.params?.['allowedValues'] as unknown[] | undefined) ?? []);
      const known = allowed.get(field);
      if (known) known.push(...values);
      else {
        allowed.set(field, [...values]);
        out.push({ field, problem: '' });
      }
      continue;
    }
    if ((issue.keyword === 'anyOf' || issue.keyword === 'oneOf') && allowed.has(field)) continue;
    out.push({ field, problem: problemOf(issue) });
  }
  for (const p of out) {
    const values = allowed.get(p.field);
    if (p.problem === '' && values) p.problem = `must be one of ${[...new Set(values.map(shown))].join(', ')}`;
  }
  return out;
}

function send(reply: FastifyReply, code: ErrorCode, status: number, message: string, details?: unknown) {
  return reply.code(status).send({ error: details === undefined ? { code, message } : { code, message, details } });
}

/** Connection-level failures of Postgres (down, restarting, pool closed): the caller may retry. */
function isDatabaseUnavailable(err: { code?: string; message?: string }): boolean {
  const code = err.code ?? '';
  if (code.startsWith('08') || code === '57P01' || code === '57P02' || code === '57P03' || code === 'ECONNREFUSED' || code === 'ECONNRESET') return true;
  return /Connection terminated|timeout exceeded when trying to connect|Cannot use a pool after calling end/.test(err.message ?? '');
}

/** The one place that turns errors into `{error: {code, message, details?}}`. */
/** The client-error codes of the table by status (one code per status; 403's is FORBIDDEN). */
const CODE_OF_STATUS = new Map<number, ErrorCode>([
  [400, 'INVALID_REQUEST'],
  [401, 'UNAUTHENTICATED'],
  [403, 'FORBIDDEN'],
  [404, 'NOT_FOUND'],
  [409, 'CONFLICT'],
  [413, 'PAYLOAD_TOO_LARGE'],
  [415, 'UNSUPPORTED_MEDIA_TYPE'],
]);

/** ` with its required fields (reason, ...)` from the route's body schema, or '' when it has none. */
function requiredFieldsHint(req: FastifyRequest): string {
  const body = (req.routeOptions.schema as { body?: { required?: unknown } } | undefined)?.body;
  const required = Array.isArray(body?.required) ? body.required.filter((f): f is string => typeof f === 'string') : [];
  return required.length > 0 ? ` with its required field${required.length === 1 ? '' : 's'} (${required.join(', ')})` : '';
}

/** The challenge of every 401: every credential (gateway key, operator key) goes as a Bearer token. */
export const WWW_AUTHENTICATE = 'Bearer realm="mcp-killswitch"';

export function installErrorHandler(app: FastifyInstance): void {
  app.setErrorHandler((err: FastifyError & { validation?: ValidationIssue[]; validationContext?: string }, req, reply) => {
    if (err instanceof AppError) {
      // A wait a retrying client (or an HTTP library) can read without parsing the body.
      if (err.retryAfterS !== undefined) reply.header('retry-after', String(err.retryAfterS));
      // RFC 9110: a 401 names the scheme it wants (HTTP libraries and proxies read it; the body says which header is at fault).
      if (err.status === 401) reply.header('www-authenticate', WWW_AUTHENTICATE);
      return send(reply, err.code, err.status, err.message, err.details);
    }
    if (err.validation) {
      const context = err.validationContext ?? 'body';
      // No body at all where the route needs one ("body: must be object"): say what to send.
      if (context === 'body' && (req.body === undefined || req.body === null)) {
        const problem = `is missing; send a JSON object${requiredFieldsHint(req)} with Content-Type: application/json`;
        return send(reply, 'INVALID_REQUEST', 400, `body: ${problem}`, [{ field: 'body', problem }]);
      }
      const details = problemsOf(context, err.validation);
      const first = details[0]!;
      return send(reply, 'INVALID_REQUEST', 400, `${first.field}: ${first.problem}`, details);
    }
    switch (err.code) {
      case 'FST_ERR_CTP_BODY_TOO_LARGE': {
        const limit = app.initialConfig.bodyLimit ?? 1_048_576;
        // The rest of the body is read first (up to discardCap), or a client still uploading loses the 413.
        return discardRestOfBody(req.raw, discardCap(limit)).then(() => {
          send(reply, 'PAYLOAD_TOO_LARGE', 413, `Request body is larger than the limit of ${limit} bytes.`, [{ field: 'body', problem: 'too large' }]);
        });
      }
      case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
        return send(reply, 'UNSUPPORTED_MEDIA_TYPE', 415, 'Send the body as application/json.', [{ field: 'content-type', problem: 'must be application/json' }]);
      case 'FST_ERR_CTP_EMPTY_JSON_BODY': {
        // Content-Type: application/json and no body (a curl with the header and no -d): what to send.
        const problem = `is empty; send a JSON object${requiredFieldsHint(req)}`;
        return send(reply, 'INVALID_REQUEST', 400, `body: ${problem}`, [{ field: 'body', problem }]);
      }
      case 'FST_ERR_CTP_INVALID_JSON_BODY':
        // Fastify's parser gives no cause: the syntax, or a key refused against prototype poisoning.
        return send(reply, 'INVALID_REQUEST', 400, 'body: is not valid JSON, or it holds a key named "__proto__" (or "constructor" with "prototype" inside), which is refused', [
          { field: 'body', problem: 'is not valid JSON, or holds a forbidden key (__proto__, constructor.prototype)' },
        ]);
      case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH':
        return send(reply, 'INVALID_REQUEST', 400, `body: is not valid JSON (${err.message})`, [{ field: 'body', problem: 'is not valid JSON' }]);
    }
    if (err.statusCode === 400 && err instanceof SyntaxError) {
      return send(reply, 'INVALID_REQUEST', 400, `body: is not valid JSON (${err.message})`, [{ field: 'body', problem: 'is not valid JSON' }]);
    }
    // Postgres refuses NUL characters in text and jsonb: the input is at fault, not the server.
    const pgCode = (err as { code?: string }).code;
    if (pgCode === '22021' || pgCode === '22P05') {
      return send(reply, 'INVALID_REQUEST', 400, 'body: contains a NUL character (\\u0000), which cannot be stored', [{ field: 'body', problem: 'contains a NUL character' }]);
    }
    if (isDatabaseUnavailable(err)) {
      reply.header('retry-after', String(SERVICE_UNAVAILABLE_RETRY_AFTER_S));
      return send(reply, 'SERVICE_UNAVAILABLE', 503, 'Postgres is unavailable; try again shortly.');
    }
    // pg's client-side query timeout (30 s for admin reads): Postgres hangs, or the query is too slow (an
    // audit filter with no index over a large trail, docs/audit.md). Not a bug of ours: it was a 500.
    if (isQueryTimeout(err as unknown)) {
      // The path only, as in a 404's message: a query string is the client's to fill (a credential pasted as
      // the audit's `token` filter, for one).
      req.log.warn({ err: err.message, url: req.url.split('?')[0] }, 'a query got no answer from Postgres within its time limit');
      reply.header('retry-after', String(SERVICE_UNAVAILABLE_RETRY_AFTER_S));
      // A read changed nothing. A write may have committed before its answer was lost (a COMMIT whose reply
      // never came): saying "nothing was changed" would invite a blind retry of, say, a key's creation.
      const read = req.method === 'GET' || req.method === 'HEAD';
      return send(
        reply,
        'SERVICE_UNAVAILABLE',
        503,
        read
          ? 'Postgres did not answer within the query time limit: it is unavailable, or the request reads too many rows (narrow it, e.g. with from/to); nothing was changed.'
          : 'Postgres did not answer within the query time limit, so whether this change was made is unknown: check (for example with the matching GET) before you try again.',
      );
    }
    // Any other client error raised by Fastify or a plugin: the code of the table for its status, so a code
    // always comes with its documented status; one the table has no code for is a 400.
    if (err.statusCode && err.statusCode >= 400 && err.statusCode < 500) {
      const code = CODE_OF_STATUS.get(err.statusCode);
      return code ? send(reply, code, err.statusCode, err.message) : send(reply, 'INVALID_REQUEST', 400, err.message);
    }
    req.log.error({ err }, 'unhandled error');
    return send(reply, 'INTERNAL', 500, `Internal error (request ${req.id}).`);
  });

  app.setNotFoundHandler((req, reply) => {
    setResponseHeaders(reply);
    return send(reply, 'NOT_FOUND', 404, `No route ${req.method} ${req.url.split('?')[0]}`);
  });
}

/**
 * Errors Fastify's router raises before a route runs (the `frameworkErrors` option): a path that is not
 * valid percent-encoding, or a path parameter longer than the router accepts. Same body as every error.
 */
/**
 * Fastify's clientErrorHandler: a request Node's HTTP parser refuses before any route sees it (headers over
 * its limit, a bad chunk size, both Content-Length and Transfer-Encoding, two different Content-Lengths)
 * gets the one error body with a code, not Fastify's default `{"error":"Bad Request"}`. Node's own code
 * for the parser error is kept in the message; the connection is closed after it, as Node does.
 */
export function clientErrorHandler(this: { log: FastifyBaseLogger; initialConfig: { requestTimeout?: number } }, err: Error & { code?: string }, socket: Duplex): void {
  if (err.code === 'ECONNRESET' || socket.destroyed) return;
  const overflow = err.code === 'HPE_HEADER_OVERFLOW';
  // Node's requestTimeout (REQUEST_TIMEOUT_MS): the request was still arriving.
  const timeout = err.code === 'ERR_HTTP_REQUEST_TIMEOUT';
  const code: ErrorCode = overflow ? 'HEADERS_TOO_LARGE' : timeout ? 'REQUEST_TIMEOUT' : 'INVALID_REQUEST';
  const status = ERROR_CODES[code].status;
  const field = overflow ? 'headers' : 'request';
  const problem = overflow
    ? 'are larger than 16 KB (request line and headers together)'
    : timeout
      ? `did not arrive whole within REQUEST_TIMEOUT_MS (${this.initialConfig.requestTimeout} ms): send the headers and body at once`
      : `is not a valid HTTP/1.1 request (${err.code ?? 'parse error'})`;
  const body = JSON.stringify({ error: { code, message: `${field}: ${problem}`, details: [{ field, problem }] } });
  this.log.debug({ err: err.message, code: err.code }, 'client error: request refused by the HTTP parser');
  // As Node's own handler: no answer over one whose head is already on the wire (it would be garbage in
  // the middle of it); the connection is only closed.
  const answered = (socket as Duplex & { _httpMessage?: { headersSent?: boolean } | null })._httpMessage?.headersSent === true;
  if (socket.writable && !answered) {
    socket.write(`HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nContent-Length: ${Buffer.byteLength(body)}\r\nContent-Type: application/json; charset=utf-8\r\nConnection: close\r\n\r\n${body}`);
  }
  socket.destroy(err);
}

export function frameworkErrors(err: FastifyError, _req: FastifyRequest, reply: FastifyReply): FastifyReply {
  if (err.code === 'FST_ERR_MAX_PARAM_LENGTH') {
    return send(reply, 'INVALID_REQUEST', 400, 'path: a path parameter is too long (ids are at most 100 characters)', [{ field: 'path', problem: 'a parameter is too long' }]);
  }
  return send(reply, 'INVALID_REQUEST', 400, 'path: is not a valid URL path (bad percent-encoding)', [{ field: 'path', problem: 'is not a valid URL path' }]);
}
