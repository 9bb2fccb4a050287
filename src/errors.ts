// The one table of stable codes. HTTP errors carry `status`; decision codes are answered inside a 200
// decision body (a denial is not an HTTP error). docs/errors.md is generated from this table and
// test/unit/codes-coverage.test.ts checks that every code is asserted by some test.

export const ERROR_CODES = {
  INVALID_REQUEST: { status: 400, doc: 'The body, query or params failed validation, or a credential header (`Authorization`, `X-Agent-Token`) was sent more than once; `details` names the field or header and the problem.' },
  UNAUTHENTICATED: { status: 401, doc: 'Missing, malformed, unknown, revoked or expired credential. On the gateway routes the message names the header at fault and what it holds (an agent token in Authorization, a gateway key in X-Agent-Token, Bearer in X-Agent-Token, a revoked key); on the admin API one message for all. Carries `WWW-Authenticate: Bearer realm="mcp-killswitch"`.' },
  MCP_TOKEN_FORBIDDEN: { status: 403, doc: 'An agent token or a gateway key was presented to the admin API; only operator keys may use it.' },
  FORBIDDEN: { status: 403, doc: 'The operator key lacks the role this route needs.' },
  NOT_FOUND: { status: 404, doc: 'No such object, or it belongs to a project this operator cannot see.' },
  CONFLICT: { status: 409, doc: 'The request conflicts with the current state (for example a second approval of one request).' },
  PAYLOAD_TOO_LARGE: { status: 413, doc: 'The body is larger than BODY_LIMIT_BYTES.' },
  REQUEST_TIMEOUT: { status: 408, doc: 'The request (headers and body) did not arrive whole within REQUEST_TIMEOUT_MS (30 s by default): answered before any route runs, and the connection is closed. Nothing was done.' },
  HEADERS_TOO_LARGE: { status: 431, doc: "The request line and headers together are larger than Node's limit (16 KB): answered before any route runs, and the connection is closed." },
  UNSUPPORTED_MEDIA_TYPE: { status: 415, doc: 'The body is not JSON.' },
  TOO_MANY_SESSIONS: { status: 429, doc: 'POST /v1/sessions: the token already has its maximum of open sessions, or opened its maximum this hour (`details.retry_after_s`, also sent as the `Retry-After` header in seconds).' },
  TOO_MANY_TOOL_REPORTS: { status: 429, doc: 'POST /v1/gateway/tools: this agent token made its maximum of tool reports this minute (policy `rate_limits.per_token.max_tool_reports_per_minute`, else TOOL_REPORTS_MAX_PER_MINUTE, default 60); nothing was stored. `details.retry_after_s`, also the `Retry-After` header, says when the window ends. A gateway reports on each tools/list, resources/list and prompts/list: an agent listing in a loop. The reference gateway passes it on as `RATE_LIMITED`.' },
  SERVICE_UNAVAILABLE: {
    status: 503,
    doc: 'A dependency this request needs (the credential store, Postgres, Redis, the audit trail) is unavailable, or Postgres did not answer within the query time limit (30 s for reads such as GET /v1/audit: it hangs, or the read passes too many rows; narrow it with `from`/`to`). Nothing was done, except after a write that timed out: its change may have been made with the answer lost, so the message says to check before trying again. The `Retry-After` header says how many seconds to wait before trying again. On `POST /v1/decisions` it means the gateway key could not be checked: no decision was made, and the gateway treats the call as denied.',
  },
  INTERNAL: { status: 500, doc: 'A bug. The log line with the request id says more.' },
} as const;

export const DECISION_CODES = {
  OK: { halts: false, doc: 'Allowed.' },
  PERMISSION_DENIED: { halts: true, doc: 'The token lacks the scope the tool needs, or the policy forbids the server/capability for its role. A write attempted with a read-only token or in a read-only session halts (WRITE_IN_READ_SESSION); a server not allowed for the role halts (UNAUTHORIZED_SERVER). Also, without a halt, a URL or path the server\'s `network` or `paths` rules refuse (an http URL where HTTPS is required, a host outside its allowed domains, a path outside its allowed directories).' },
  KILL_SWITCH: { halts: false, doc: 'An Unleash flag is off or an operator kill matches; the message names it.' },
  UNKNOWN_SERVER: { halts: true, doc: 'The server is not in the policy: halts (UNAUTHORIZED_SERVER). A server in the policy but not allowed for the role is PERMISSION_DENIED with the same trigger.' },
  TOOL_CHANGED: { halts: false, doc: 'The `tool_hash` is not the approved definition of the tool, or, without `tool_hash`, the definition of the tool that the calling gateway reported last is not approved (pending, rejected or superseded); what other gateways reported does not count. The message names that definition: an operator approves it (POST /v1/tools/<id>/approve), or the upstream is fixed; a rejected one says who rejected it and why. With `tool_hash` it names the hash sent and the approved one: a gateway holding a stale tools/list lists the tools again, reports them and sends the hash of what it lists. A tool no gateway reported is not checked.' },
  ENVIRONMENT_FORBIDDEN: { halts: true, doc: 'The request names another environment than the token (no halt), or the call reaches a production network identity (host or database name matching a forbidden pattern, in the policy\'s identity of the server, the identity the calling gateway reported for it, the arguments or the resources) without a human grant (halts: PRODUCTION_ENVIRONMENT).' },
  HUMAN_AUTHORIZATION_REQUIRED: { halts: false, doc: 'Production access needs an active human grant (POST /v1/grants). `approval_id` names the request for one in the approval queue (one per token and session); approving it creates the grant.' },
  APPROVAL_REQUIRED: { halts: false, doc: 'The policy requires a human to approve these exact arguments first. `approval_id` names the request (a repeat of the same call names the same one); once an operator approves it, the identical call is allowed once.' },
  APPROVAL_EXPIRED: { halts: false, doc: 'The approval request for this exact call expired before an operator decided it, or it was approved but not used within its window. `approval_id` names the new request opened in its place (the message names the expired one); when the approval ran out between two checks of one call, it names the expired one.' },
  APPROVAL_REJECTED: { halts: false, doc: 'An operator rejected this exact call (the message carries the reason); identical calls are refused until the rejection window ends. `approval_id` names the rejected request.' },
  APPROVAL_USED: { halts: false, doc: 'Replay: the approval for this exact call was already used by one call. `approval_id` names the new request opened for this call (the message names the used one); when identical calls raced for one approval, it names the used one.' },
  RATE_LIMITED: { halts: false, doc: 'A per-minute or per-day limit; retry after `retry_after_s`. The reference gateway also answers it to a list (tools/list, resources/list, resources/templates/list, prompts/list) whose tool report the control plane refused with 429 TOO_MANY_TOOL_REPORTS: a JSON-RPC error whose message says when to retry.' },
  SESSION_HALTED: { halts: true, doc: 'The session or token is halted by a kill-switch trigger until an operator resumes it (no new halt). The call that reaches a session total the policy makes halting (for example 200 calls per session) gets it too, and halts the session (SESSION_LIMIT).' },
  SESSION_UNKNOWN: { halts: false, doc: 'The session id was not issued by the control plane, is closed, or belongs to another token.' },
  CASCADE_WRITE: { halts: true, doc: 'Several writes to different resources without a pause: halts.' },
  DEPENDENCY_UNAVAILABLE: { halts: false, doc: 'Redis, Postgres, the flag client or the audit spool is unavailable or not ready: fail closed.' },
} as const;

/**
 * The reference gateway's own codes (src/gateway/), answered to agents besides the control plane's codes
 * above, which it passes on. A code starts the text the agent reads (a tool result with isError, or the
 * message of a JSON-RPC error for resources/read, prompts/get and the HTTP front's initialize); a decided
 * tool call's result also carries it as `_meta["killswitch/decision"].code`. `action`: what the agent, or the operator running
 * the gateway, should do about it.
 */
export const GATEWAY_CODES = {
  LARGE_RESULT: {
    doc: "The call ran; its result (or the upstream's error text) is over the gateway's `maxResultBytes` (default 1 MB), or over what the gateway reads of one upstream message, and was withheld. Also the control plane's trigger for a result over the policy's `large_result_bytes`: withheld, and the session halts.",
    action: "Ask for less (a narrower query, one page). The operator may raise the server's `maxResultBytes` in the gateway config.",
  },
  MAX_ROWS: {
    doc: "The call ran; its result has more rows than the gateway's `maxRows` and was withheld. Also the control plane's trigger for more rows than the policy's `max_rows_returned`: withheld, and the session halts.",
    action: 'Ask for fewer rows (a LIMIT, a filter).',
  },
  MAX_EXECUTION_TIME: {
    doc: "The call ran longer than the gateway's `maxExecutionSeconds` (default 30) and was cancelled upstream (`notifications/cancelled`); it is not retried. Also the control plane's trigger for a call that took longer than the policy's `max_execution_time_seconds`: its result is withheld, and the session halts.",
    action: 'Do not repeat the call as it is: make it cheaper. The operator may raise `maxExecutionSeconds`.',
  },
  UPSTREAM_ERROR: {
    doc: 'The upstream server failed the call with a JSON-RPC error, not retried; the text is its message, cut to 4 KB. (A failure an upstream returns as an `isError` result passes through as the upstream wrote it.)',
    action: 'Read the message: fix the arguments before calling again.',
  },
  UPSTREAM_UNAVAILABLE: {
    doc: "The upstream's connection closed, during the call or before it: the gateway is reconnecting it (the text says for how long it has been down); nothing was retried. Also a call to a tool of an upstream whose last tools/list failed or was not answered within the gateway's `listTimeoutMs`: its tools are left out of tools/list and not called until it lists them again.",
    action: "Try again later. The operator reads the gateway's log for why the upstream server stops.",
  },
  CANCELLED: {
    doc: 'The agent cancelled the call (`notifications/cancelled`) while it ran upstream or while the gateway waited for an approval. A running call is cancelled upstream too, and reported to the control plane with status `cancelled`; an MCP client does not read the answer to a request it cancelled.',
    action: 'Nothing: the agent asked for it.',
  },
  UNKNOWN_TOOL: {
    doc: 'tools/call names no tool behind this gateway: none of its upstreams offers it (any more), or the gateway hides it (an invalid or duplicate name, a definition the control plane cannot store or would refuse in a tool report, no room left in the report: docs/gateway.md). A JSON-RPC error, -32602, as MCP asks of an unknown tool (not a tool result): nothing was decided or run. A tool of a server the policy does not list is UNKNOWN_SERVER instead.',
    action: 'List the tools again (tools/list) and call one of those.',
  },
  UNKNOWN_RESOURCE: {
    doc: 'resources/read names a URI no upstream server behind this gateway offers (a JSON-RPC error, -32602).',
    action: 'List the resources again (resources/list) and read one of those.',
  },
  UNKNOWN_PROMPT: {
    doc: 'prompts/get names no prompt behind this gateway (a JSON-RPC error, -32602).',
    action: 'List the prompts again (prompts/list) and get one of those.',
  },
  WITHHELD: {
    doc: 'The call ran and the control plane answered its result report with `withhold_and_halt` but named no trigger (`trigger` is optional in the API; this control plane always names LARGE_RESULT, MAX_ROWS or MAX_EXECUTION_TIME): the result was withheld, and the message says what is halted.',
    action: 'Stop and ask a human: nothing more runs until an operator resumes what is halted.',
  },
  REFUSED: {
    doc: "Streamable HTTP front: at initialize, opening the agent's control-plane session was refused with a 4xx (other than 401) whose body names no code, so something other than the control plane answered at `killswitch.url` (a proxy, a wrong path). The gateway answers 403 (429 for a 429); the message carries the HTTP status.",
    action: 'Operator: check `killswitch.url` in the gateway config and what answers there.',
  },
} as const;

/**
 * The JSON-RPC error codes the reference gateway answers an agent with, and when. MCP names -32602 for an
 * unknown tool, prompt or resource and -32603 for internal errors; a policy refusal is neither (-32600
 * "Invalid Request" would say the JSON-RPC message itself was malformed), so it takes one code of the
 * range JSON-RPC reserves for implementation-defined server errors, clear of the SDK's -32000, -32001 and
 * MCP's -32002 and -32042. The text starts with the gateway or decision code; `error.data.code` holds it.
 */
export const GATEWAY_RPC_ERRORS = {
  METHOD_NOT_FOUND: { code: -32601, doc: 'A method the gateway does not serve (`resources/subscribe`, `completion/complete`, `tasks/*`, ...), named in the message; nothing reaches an upstream.' },
  INVALID_PARAMS: {
    code: -32602,
    doc: 'A name no upstream behind the gateway offers: `tools/call` of an unknown tool (`UNKNOWN_TOOL`), `resources/read` of an unknown URI (`UNKNOWN_RESOURCE`), `prompts/get` of an unknown prompt (`UNKNOWN_PROMPT`), as MCP asks for unknown tools and prompts; also a list `cursor` the gateway never gave. Nothing is decided or run.',
  },
  INTERNAL_ERROR: {
    code: -32603,
    doc: '`resources/read` or `prompts/get` that was allowed and then failed (`UPSTREAM_ERROR`, `UPSTREAM_UNAVAILABLE`, `MAX_EXECUTION_TIME`, `CANCELLED`); a list that needs the control plane and got no answer (`DEPENDENCY_UNAVAILABLE`, `UNAUTHENTICATED`, `RATE_LIMITED`).',
  },
  REFUSED: {
    code: -32010,
    doc: '`resources/read` or `prompts/get` refused by the kill switch: denied by the control plane (any decision code, `DEPENDENCY_UNAVAILABLE` when it did not answer) or its result withheld (`LARGE_RESULT`, `MAX_ROWS`, ...). `error.data` is what a tool result carries as `_meta["killswitch/decision"]`: `{outcome, code, decision_id, approval_id?, retry_after_s?}`. (A denied or withheld `tools/call` is a tool result with `isError`, which the model reads.)',
  },
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;
export type DecisionCode = keyof typeof DECISION_CODES;
export type GatewayCode = keyof typeof GATEWAY_CODES;

/** The gateway's codes by name, for the code that answers them: a code the table lacks does not compile. */
export const GATEWAY_CODE = Object.freeze(Object.fromEntries(Object.keys(GATEWAY_CODES).map((code) => [code, code]))) as { readonly [C in GatewayCode]: C };

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
export const unauthenticated = (message: string = UNAUTHENTICATED_MESSAGE): AppError => new AppError('UNAUTHENTICATED', message);
