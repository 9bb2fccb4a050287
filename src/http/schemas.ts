import type { FastifyInstance, FastifyRequest, RouteOptions } from 'fastify';
import { Type } from 'typebox';
import { ONE_LINE, TEXT_PATTERN } from '../tokens/names.js';

export const ErrorBody = Type.Object(
  {
    error: Type.Object({
      code: Type.String(),
      message: Type.String(),
      details: Type.Optional(Type.Unknown()),
    }),
  },
  { description: 'Every error: a stable code (docs/errors.md), a message for humans, and details such as the failing field.' },
);

/**
 * The body of an action whose reason is optional (revoking a gateway or operator key or a grant, closing a
 * session): `{}`, `{reason}` or no body at all (with `bodyOptional`). Any other field is refused (400),
 * so a reason sent under another name is not dropped without a word.
 */
export const OptionalReasonBody = Type.Object(
  { reason: Type.Optional(Type.String({ minLength: 1, maxLength: 1000, pattern: TEXT_PATTERN, description: `Why; recorded in the audit row. ${ONE_LINE}` })) },
  { additionalProperties: false },
);

/** preValidation of a route with OptionalReasonBody: a request without a body is validated as `{}`. */
export async function bodyOptional(req: FastifyRequest): Promise<void> {
  if (req.body === undefined || req.body === null) req.body = {};
}

/** Methods whose requests Fastify reads a body for (its `bodywith` set): each can answer 413 and 415. */
const BODY_METHODS = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);

/**
 * Declares the errors a route answers because of where it sits, not what it does, so that the OpenAPI
 * document lists every status a client can get:
 * - 413 PAYLOAD_TOO_LARGE and 415 UNSUPPORTED_MEDIA_TYPE on every route that reads a body (Fastify
 *   parses one for these methods whether or not the route declares it);
 * - 503 SERVICE_UNAVAILABLE on every route that checks a credential (it declares 401): the credential
 *   store can be unavailable.
 * Only routes that declare responses are completed (a route without any keeps the OpenAPI default);
 * a status a route declares itself is left as it is. Added before the routes (an onRoute hook).
 */
export function declareCommonErrors(app: FastifyInstance): void {
  app.addHook('onRoute', (route: RouteOptions) => {
    const schema = route.schema as { response?: Record<string, unknown>; hide?: boolean } | undefined;
    if (!schema?.response || schema.hide) return;
    const response: Record<string, unknown> = { ...schema.response };
    const add = (status: number) => {
      if (!(status in response)) response[status] = ErrorBody;
    };
    if ([route.method].flat().some((m) => BODY_METHODS.has(m.toUpperCase()))) {
      add(413);
      add(415);
    }
    if (401 in response) add(503);
    // A copy: routes may share one schema object, and one route's additions are not another's.
    route.schema = { ...schema, response };
  });
}
