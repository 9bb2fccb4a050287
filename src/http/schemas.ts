import type { SwaggerTransformObject } from '@fastify/swagger';
import type { FastifyInstance, FastifyRequest, RouteOptions } from 'fastify';
import { type TSchema, Type } from 'typebox';
import { ERROR_CODES, type ErrorCode, invalid } from '../errors.js';
import { REASON_PATTERN, REASON_TEXT } from '../tokens/names.js';

/** Every code of the one error table (src/errors.ts); the decision codes are a field of a 200, not these. */
const ErrorCodeSchema = Type.Unsafe<ErrorCode>({ type: 'string', enum: Object.keys(ERROR_CODES), description: 'Stable error code: docs/errors.md.' });

const ERROR_DESCRIPTION = 'Every error: a stable code (docs/errors.md), a message for humans, and details such as the failing field.';

const errorBody = (details: TSchema, description: string) =>
  Type.Object({ error: Type.Object({ code: ErrorCodeSchema, message: Type.String({ description: 'For humans; may change. Act on `code`.' }), details: Type.Optional(details) }) }, { description });

export const ErrorBody = errorBody(
  Type.Unknown({
    description:
      'Depends on the code: an object with the facts a client can act on (409: the state in the way, such as `state` and `halted_by`; 429: `limit`, `max`, `retry_after_s`), or a list of `{field, problem}` (403 on a project limit); absent when there is nothing to add.',
  }),
  ERROR_DESCRIPTION,
);

/** What a refused request says about each field at fault (FieldProblem in src/errors.ts). */
const FieldProblems = Type.Array(
  Type.Object({
    field: Type.String({ description: 'The field, query or path parameter, or header at fault (`body`, `path` or `content-type` when it is the whole of it).' }),
    problem: Type.String({ description: 'What is wrong with it, for humans.' }),
  }),
  { description: 'One entry per problem found, the first also in `message`; absent when the request is refused before any field is known.' },
);

/** 400, 413 and 415: the error body whose `details` lists the fields at fault (src/http/error-handler.ts). */
export const FieldErrorBody = errorBody(FieldProblems, 'The request was refused: `details` names each field at fault and the problem.');

/** The `Retry-After` header of a 503 (every one a route answers: src/http/error-handler.ts) and of a 429 that knows its wait. */
const retryAfter = (description: string) => ({ 'Retry-After': Type.Integer({ minimum: 1, description }) });

/**
 * A response schema with one entry per media type (Fastify serialises with the entry of the Content-Type
 * the handler sets; a string body is sent as it is) and the headers it carries (each a schema with its
 * description), both shown in the OpenAPI document. For a status that answers something other than JSON,
 * or sends headers a client reads.
 */
export function mediaTypes(description: string, content: Record<string, TSchema>, headers: Record<string, TSchema> = {}) {
  return {
    description,
    ...(Object.keys(headers).length > 0 ? { headers } : {}),
    content: Object.fromEntries(Object.entries(content).map(([type, schema]) => [type, { schema }])),
  };
}

/**
 * A `from`/`to` window (from inclusive, to exclusive) that can hold nothing is a mistake (the two swapped,
 * a typo'd year), not a question whose answer is empty: 400 naming `from`, on every route that takes one
 * (the incident timeline says the same: src/incidents/service.ts).
 */
export function requireWindowInOrder(from: Date | undefined, to: Date | undefined): void {
  if (from && to && from.getTime() >= to.getTime()) throw invalid('from', 'must be before `to`');
}

/**
 * The errors of an operator's read that names nothing that could be missing or in the way (a list, a
 * catalogue): the credential (400 for a repeated header, 401, 403); 503 is added with 401. A read of one
 * object adds 404; neither declares 409, which only a change can meet.
 */
export const READ_ERRORS = { 400: ErrorBody, 401: ErrorBody, 403: ErrorBody };

/** The query of a route that takes no parameter: any one sent is refused (400 naming it), as on every route with a query. */
export const NoQuery = Type.Object({}, { additionalProperties: false });

/**
 * The body of an action whose reason is optional (revoking a gateway or operator key or a grant, closing a
 * session): `{}`, `{reason}` or no body at all (with `bodyOptional`). Any other field is refused (400),
 * so a reason sent under another name is not dropped without a word.
 */
export const OptionalReasonBody = Type.Object(
  { reason: Type.Optional(Type.String({ minLength: 1, maxLength: 1000, pattern: REASON_PATTERN, description: `Why; recorded in the audit row. ${REASON_TEXT}` })) },
  { additionalProperties: false },
);

/**
 * preValidation of a route whose body is optional (OptionalReasonBody, an optional note): a request
 * without a body is validated as `{}`. The OpenAPI document says `requestBody.required: false` for every
 * route that uses it (declareCommonErrors marks it, optionalBodies applies it).
 */
export async function bodyOptional(req: FastifyRequest): Promise<void> {
  if (req.body === undefined || req.body === null) req.body = {};
}

/** The mark declareCommonErrors leaves on a route whose body bodyOptional makes optional (an `x-` key: @fastify/swagger copies it to the operation). */
const BODY_OPTIONAL = 'x-body-optional';

/** Methods whose requests Fastify reads a body for (its `bodywith` set): each can answer 413 and 415. */
const BODY_METHODS = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);

/**
 * The declared answer of an error status, as the error handler sends it: 400, 413 and 415 carry their
 * `{field, problem}` list; a 503 always carries `Retry-After` (SERVICE_UNAVAILABLE_RETRY_AFTER_S unless
 * its cause knows better), a 429 when it knows the wait.
 */
function errorAnswer(status: number) {
  if (status === 400 || status === 413 || status === 415) return FieldErrorBody;
  if (status === 503) return mediaTypes(ERROR_DESCRIPTION, { 'application/json': ErrorBody }, retryAfter('Seconds to wait before trying again.'));
  if (status === 429) return mediaTypes(ERROR_DESCRIPTION, { 'application/json': ErrorBody }, retryAfter('Seconds until the limit lets the request through again (a session opened, a tool report taken), when that is known (also `details.retry_after_s`).'));
  return ErrorBody;
}

/**
 * Declares the errors a route answers because of where it sits, not what it does, so that the OpenAPI
 * document lists every status a client can get:
 * - 413 PAYLOAD_TOO_LARGE and 415 UNSUPPORTED_MEDIA_TYPE on every route that reads a body (Fastify
 *   parses one for these methods whether or not the route declares it);
 * - 400 INVALID_REQUEST (a credential header sent twice) and 503 SERVICE_UNAVAILABLE (the credential
 *   store can be unavailable) on every route that checks a credential (it declares 401).
 * It also gives every `/v1/` route that declares no query NoQuery, so a parameter it does not take is
 * refused (400 naming it) instead of ignored: `GET /v1/keys/ID?revoked=true` or a filter sent to the wrong
 * route must not look as if it had been applied. (/healthz, /readyz and the static routes keep accepting
 * any query: a load balancer's probe may add one.)
 * Each declared ErrorBody then becomes its status's exact answer (errorAnswer: 400's `details` is typed,
 * so a 400 must carry FieldProblem[] or none; anything else would fail to serialise), and a route whose
 * preValidation is bodyOptional is marked so the document says its body is optional.
 * Only routes that declare responses are completed (a route without any keeps the OpenAPI default);
 * a status a route declares itself is kept. Added before the routes (an onRoute hook).
 */
export function declareCommonErrors(app: FastifyInstance): void {
  app.addHook('onRoute', (route: RouteOptions) => {
    const schema = route.schema as { response?: Record<string, unknown>; hide?: boolean; querystring?: unknown } | undefined;
    if (!schema?.response || schema.hide) return;
    const query = schema.querystring === undefined && route.url.startsWith('/v1/') ? { querystring: NoQuery } : {};
    const response: Record<string, unknown> = { ...schema.response };
    const add = (status: number) => {
      if (!(status in response)) response[status] = ErrorBody;
    };
    if ([route.method].flat().some((m) => BODY_METHODS.has(m.toUpperCase()))) {
      add(413);
      add(415);
    }
    if (401 in response) {
      add(400);
      add(503);
    }
    if ('querystring' in query) add(400);
    for (const [status, answer] of Object.entries(response)) if (answer === ErrorBody) response[status] = errorAnswer(Number(status));
    const optional = [route.preValidation].flat().includes(bodyOptional);
    // A copy: routes may share one schema object, and one route's additions are not another's.
    route.schema = { ...schema, ...query, response, ...(optional ? { [BODY_OPTIONAL]: true } : {}) };
  });
}

/**
 * @fastify/swagger's transformObject: @fastify/swagger declares every request body required (Fastify
 * refuses a missing one when the route has a body schema); a route marked by declareCommonErrors takes
 * none (bodyOptional), and says so. The mark itself is removed from the document.
 */
export const optionalBodies: SwaggerTransformObject = (document) => {
  if (!('openapiObject' in document)) return document.swaggerObject;
  for (const item of Object.values(document.openapiObject.paths ?? {})) {
    for (const op of Object.values(item ?? {}) as Array<Record<string, unknown> & { requestBody?: { required?: boolean } }>) {
      if (!op || typeof op !== 'object' || !(BODY_OPTIONAL in op)) continue;
      if (op.requestBody) op.requestBody.required = false;
      delete op[BODY_OPTIONAL];
    }
  }
  return document.openapiObject;
};
