// The one table of stable codes. HTTP errors carry `status`; decision codes are answered inside a 200
// decision body (a denial is not an HTTP error). docs/errors.md is generated from this table and
// test/unit/codes-coverage.test.ts checks that every code is asserted by some test.

export const ERROR_CODES = {
  INVALID_REQUEST: { status: 400, doc: 'The body, query or params failed validation; `details` names the field and the problem.' },
  UNAUTHENTICATED: { status: 401, doc: 'Missing, malformed, unknown, revoked or expired credential (one body for all).' },
  MCP_TOKEN_FORBIDDEN: { status: 403, doc: 'An agent token or a gateway key was presented to the admin API; only operator keys may use it.' },
  FORBIDDEN: { status: 403, doc: 'The operator key lacks the role this route needs.' },
  NOT_FOUND: { status: 404, doc: 'No such object, or it belongs to a project this operator cannot see.' },
  CONFLICT: { status: 409, doc: 'The request conflicts with the current state (for example a second approval of one request).' },
  PAYLOAD_TOO_LARGE: { status: 413, doc: 'The body is larger than BODY_LIMIT_BYTES.' },
  UNSUPPORTED_MEDIA_TYPE: { status: 415, doc: 'The body is not JSON.' },
  TOO_MANY_SESSIONS: { status: 429, doc: 'POST /v1/sessions: the token already has its maximum of open sessions, or opened its maximum this hour (`details.retry_after_s`, also sent as the `Retry-After` header in seconds).' },
  SERVICE_UNAVAILABLE: {
    status: 503,
    doc: 'A dependency this request needs (the credential store, Postgres, Redis, the audit trail) is unavailable; nothing was done. The `Retry-After` header says how many seconds to wait before trying again. On `POST /v1/decisions` it means the gateway key could not be checked: no decision was made, and the gateway treats the call as denied.',
  },
  INTERNAL: { status: 500, doc: 'A bug. The log line with the request id says more.' },
} as const;

export const DECISION_CODES = {
  OK: { halts: false, doc: 'Allowed.' },
  PERMISSION_DENIED: { halts: true, doc: 'The token lacks the scope the tool needs, or the policy forbids the server/capability for its role. A write attempted with a read-only token or in a read-only session halts (WRITE_IN_READ_SESSION); a server not allowed for the role halts (UNAUTHORIZED_SERVER).' },
  KILL_SWITCH: { halts: false, doc: 'An Unleash flag is off or an operator kill matches; the message names it.' },
  UNKNOWN_SERVER: { halts: true, doc: 'The server is not in the policy: halts (UNAUTHORIZED_SERVER). A server in the policy but not allowed for the role is PERMISSION_DENIED with the same trigger.' },
  TOOL_CHANGED: { halts: false, doc: 'The `tool_hash` is not the approved definition of the tool, or, without `tool_hash`, the definition of the tool that the calling gateway reported last is not approved (pending, rejected or superseded); what other gateways reported does not count. The message names that definition: an operator approves it (POST /v1/tools/<id>/approve), or the upstream is fixed; a rejected one says who rejected it and why. A tool no gateway reported is not checked.' },
  ENVIRONMENT_FORBIDDEN: { halts: true, doc: 'The request names another environment than the token (no halt), or the call reaches a production network identity (host or database name matching a forbidden pattern) without a human grant (halts: PRODUCTION_ENVIRONMENT).' },
  HUMAN_AUTHORIZATION_REQUIRED: { halts: false, doc: 'Production access needs an active human grant (POST /v1/grants). `approval_id` names the request for one in the approval queue (one per token and session); approving it creates the grant.' },
  APPROVAL_REQUIRED: { halts: false, doc: 'The policy requires a human to approve these exact arguments first. `approval_id` names the request (a repeat of the same call names the same one); once an operator approves it, the identical call is allowed once.' },
  APPROVAL_EXPIRED: { halts: false, doc: 'The approval request for this exact call expired before an operator decided it, or it was approved but not used within its window. `approval_id` names the new request opened in its place (the message names the expired one); when the approval ran out between two checks of one call, it names the expired one.' },
  APPROVAL_REJECTED: { halts: false, doc: 'An operator rejected this exact call (the message carries the reason); identical calls are refused until the rejection window ends. `approval_id` names the rejected request.' },
  APPROVAL_USED: { halts: false, doc: 'Replay: the approval for this exact call was already used by one call. `approval_id` names the new request opened for this call (the message names the used one); when identical calls raced for one approval, it names the used one.' },
  RATE_LIMITED: { halts: false, doc: 'A per-minute or per-day limit; retry after `retry_after_s`.' },
  SESSION_HALTED: { halts: true, doc: 'The session or token is halted by a kill-switch trigger until an operator resumes it (no new halt). The call that reaches a session total the policy makes halting (for example 200 calls per session) gets it too, and halts the session (SESSION_LIMIT).' },
  SESSION_UNKNOWN: { halts: false, doc: 'The session id was not issued by the control plane, is closed, or belongs to another token.' },
  CASCADE_WRITE: { halts: true, doc: 'Several writes to different resources without a pause: halts.' },
  DEPENDENCY_UNAVAILABLE: { halts: false, doc: 'Redis, Postgres, the flag client or the audit spool is unavailable or not ready: fail closed.' },
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;
export type DecisionCode = keyof typeof DECISION_CODES;

export interface FieldProblem {
  field: string;
  problem: string;
}

/**
 * What a 503 SERVICE_UNAVAILABLE sends as `Retry-After` when its cause gives no better wait: a credential
 * cache refill, a Postgres or Redis reconnect, a state reload usually take a second or two.
 */
export const SERVICE_UNAVAILABLE_RETRY_AFTER_S = 2;

export class AppError extends Error {
  readonly status: number;
  /**
   * Seconds for the `Retry-After` header (set by the error handler). A 503 gets
   * SERVICE_UNAVAILABLE_RETRY_AFTER_S unless it says otherwise; `false`: no header (waiting will not help).
   */
  readonly retryAfterS: number | undefined;
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly details?: Record<string, unknown> | FieldProblem[],
    opts: { retryAfterS?: number | false } = {},
  ) {
    super(message);
    this.name = 'AppError';
    this.status = ERROR_CODES[code].status;
    const wait = opts.retryAfterS ?? (this.status === 503 ? SERVICE_UNAVAILABLE_RETRY_AFTER_S : undefined);
    this.retryAfterS = wait === false ? undefined : wait;
  }
}

export const invalid = (field: string, problem: string): AppError =>
  new AppError('INVALID_REQUEST', `${field}: ${problem}`, [{ field, problem }]);

export const notFound = (what: string): AppError => new AppError('NOT_FOUND', `${what} not found`);

export const UNAUTHENTICATED_MESSAGE = 'Missing or invalid credential.';
export const unauthenticated = (): AppError => new AppError('UNAUTHENTICATED', UNAUTHENTICATED_MESSAGE);
