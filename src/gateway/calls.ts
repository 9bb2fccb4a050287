import { ErrorCode, McpError } from '@modelcontextprotocol/sdk/types.js';
import type { DecisionAnswer, DecisionBody, ResultBody } from '../decisions/schemas.js';
import { GATEWAY_CODE, type GatewayCode } from '../errors.js';
import { joinSentences } from '../sentences.js';
import type { ToolAnnotations } from './catalog.js';
import type { ApprovalWait, UpstreamLimits } from './config.js';
import { type ApprovalStatusAnswer, ControlPlaneError, type ResultAnswerBody } from './control-plane.js';
import { guardTrigger } from './guards.js';
import { OversizeMessageError } from './message-size.js';
import { UpstreamUnavailableError } from './upstream.js';

// One decided call, whatever the agent asked (tools/call, resources/read, prompts/get): ask
// POST /v1/decisions, run it upstream only on allow, measure and guard the result, report it to
// /v1/decisions/:id/result, and return what the agent may see. A failed call is never retried.

export interface DecidedCall {
  server: string;
  tool: string;
  arguments: Record<string, unknown>;
  resources: string[];
  toolHash?: string;
  annotations?: ToolAnnotations;
}

export interface Measured {
  bytes: number;
  rows: number | undefined;
  /** The upstream answered with an error result (a tool result with isError) or an error. */
  isError: boolean;
}

/** How an allowed call's trip to the upstream ended (the gateway's metrics; the RESULT row has its own status). */
export type UpstreamCallResult = 'ok' | 'tool_error' | 'error' | 'unavailable' | 'timeout' | 'cancelled' | 'oversize';

/** An allowed call that was sent to the upstream: how it ended and how long it took. */
export interface UpstreamCall {
  result: UpstreamCallResult;
  seconds: number;
}

/**
 * `decided`: the control plane answered this denial; false when it gave no decision (unreachable, timed
 * out, an answer that is not one, credentials refused) and the gateway denied to fail closed.
 * `upstream`: set once the call was sent (not when it was cancelled before).
 */
export type Outcome<T> =
  | { kind: 'denied'; code: string; text: string; decisionId: string | undefined; decided: boolean; approvalId?: string; retryAfterS?: number }
  | { kind: 'withheld'; trigger: string; text: string; decisionId: string; upstream: UpstreamCall | undefined }
  | { kind: 'failed'; code: string; text: string; decisionId: string; upstream: UpstreamCall | undefined }
  | { kind: 'ok'; result: T; warning: string | undefined; decisionId: string; upstream: UpstreamCall | undefined };

/** What a call needs from the agent's session (see AgentSession). */
export interface CallPorts {
  readonly agentToken: string;
  sessionId(): Promise<string>;
  reopen(): Promise<string>;
  decide(body: DecisionBody): Promise<DecisionAnswer>;
  reportResult(decisionId: string, body: ResultBody): Promise<ResultAnswerBody>;
  client(): DecisionBody['client'] | undefined;
  environment: DecisionBody['environment'] | undefined;
  /** What to do with a call a human must approve first (the gateway config's `approvals`). */
  readonly approvalWait: ApprovalWait;
  approvalStatus(approvalId: string): Promise<ApprovalStatusAnswer>;
}

/** Tells the agent, while its call waits for a human (an MCP progress or log notification). */
export type WaitNotice = (message: string, elapsedMs: number) => Promise<void>;

/** Denials that name an open approval request the gateway can wait for. */
const WAITABLE = new Set(['APPROVAL_REQUIRED', 'APPROVAL_EXPIRED', 'APPROVAL_USED', 'HUMAN_AUTHORIZATION_REQUIRED']);

const MAX_ERROR_TEXT = 4000;
/** What a cancelled or timed-out call's RESULT says of its effect: the upstream had it, and may have done it. */
const MAY_HAVE_RUN = 'it had been sent to the upstream, which may have done it all the same (a cancellation asks an MCP server to stop; it cannot undo what already ran)';
/** What the RESULT of a call cancelled before it was sent says: it provably did not run. */
const NOT_SENT = 'the agent cancelled the call while the control plane decided it; it was not sent to the upstream and did not run';
/** The longest upstream error message an agent reads (the rest is cut, and the report says how long it was). */
export const MAX_AGENT_ERROR_BYTES = 4096;

/**
 * A JSON-RPC error answered to the agent (resources/read, prompts/get, tools/list). Not McpError: that
 * prefixes "MCP error <code>: " to the message, and the client's McpError prefixes it once more.
 */
export class AgentRequestError extends Error {
  constructor(
    readonly code: number,
    message: string,
    readonly data?: unknown,
  ) {
    super(message);
    this.name = 'AgentRequestError';
  }
}

function lastCallLine(c: Record<string, unknown>): string {
  const what = [c['server'], c['tool']].filter((x) => typeof x === 'string').join('/');
  const rawArgs = typeof c['args'] === 'string' ? c['args'] : c['arguments'] !== undefined ? JSON.stringify(c['arguments']) : '';
  const decided = [c['decision'], c['code']].filter((x) => typeof x === 'string').join(' ');
  const status = (c['outcome'] as { status?: unknown } | undefined)?.status;
  const outcome = [decided, typeof status === 'string' ? status : ''].filter(Boolean).join(', ');
  return `- ${what || 'call'}${rawArgs ? ` ${rawArgs.slice(0, 300)}` : ''}${outcome ? ` → ${outcome}` : ''}`;
}

/**
 * The text an agent reads for a denial: code, message, and for a halt the trigger and the last calls.
 * The control plane's message says what is halted, the session or the whole token, and who resumes it;
 * saying "session" again here would contradict a token halt, so the gateway only adds what to do.
 */
export function denialText(code: string, message: string, session?: DecisionAnswer['session']): string {
  let text = `${code}: ${message}`;
  if (session?.state === 'halted') {
    text += /\bhalted\b/i.test(message)
      ? '\nStop and ask a human: nothing more runs until an operator resumes it.'
      : `\nSession ${session.id} is halted${session.trigger ? ` (trigger ${session.trigger})` : ''}: stop and ask a human; an operator must resume it.`;
    const last = (session.last_calls ?? []).slice(0, 3) as Array<Record<string, unknown>>;
    if (last.length > 0) text += `\nLast calls:\n${last.map(lastCallLine).join('\n')}`;
  }
  return text;
}

function unavailable(err: unknown): { code: string; text: string } {
  if (err instanceof ControlPlaneError) {
    if (err.failure === 'unauthenticated') return { code: 'UNAUTHENTICATED', text: `UNAUTHENTICATED: the control plane refused the credentials (${err.message})` };
    if (err.failure === 'rejected') return { code: err.code ?? 'INVALID_REQUEST', text: `${err.code ?? 'INVALID_REQUEST'}: the control plane refused the request: ${err.message}` };
    return { code: 'DEPENDENCY_UNAVAILABLE', text: `DEPENDENCY_UNAVAILABLE: ${err.message}; denied to fail closed` };
  }
  return { code: 'DEPENDENCY_UNAVAILABLE', text: `DEPENDENCY_UNAVAILABLE: ${(err as Error).message}; denied to fail closed` };
}

function isTimeout(err: unknown): boolean {
  return err instanceof McpError && err.code === ErrorCode.RequestTimeout;
}

export async function decideAndRun<T>(
  ports: CallPorts,
  call: DecidedCall,
  limits: UpstreamLimits,
  signal: AbortSignal,
  run: (opts: { timeoutMs: number; signal: AbortSignal }) => Promise<T>,
  measure: (result: T) => Measured,
  notice?: WaitNotice,
): Promise<Outcome<T>> {
  let answer: DecisionAnswer;
  let askedIn = '';
  const ask = async (sessionId: string): Promise<DecisionAnswer> => {
    askedIn = sessionId;
    const body: DecisionBody = { server: call.server, tool: call.tool, arguments: call.arguments, session_id: sessionId, resources: call.resources };
    if (call.toolHash) body.tool_hash = call.toolHash;
    if (call.annotations) body.annotations = call.annotations;
    if (ports.environment) body.environment = ports.environment;
    const client = ports.client();
    if (client) body.client = client;
    return ports.decide(body);
  };
  try {
    answer = await ask(await ports.sessionId());
    // An idle session the control plane forgot: open a new one and ask once more. Nothing ran yet, so
    // this re-asks a question; it never repeats a call. Halts are per token too, so nothing escapes.
    if (answer.decision === 'deny' && answer.code === 'SESSION_UNKNOWN') answer = await ask(await ports.reopen());
  } catch (err) {
    const u = unavailable(err);
    return { kind: 'denied', code: u.code, text: u.text, decisionId: undefined, decided: false };
  }
  if (answer.decision !== 'allow' && answer.approval_id && ports.approvalWait.mode === 'wait' && WAITABLE.has(answer.code)) {
    const waited = await waitForApproval(ports, answer.approval_id, answer.message, signal, notice);
    if (waited) return { kind: 'denied', code: waited.code, text: waited.text, decisionId: answer.decision_id || undefined, decided: true, approvalId: answer.approval_id };
    // Approved: the identical question once more (same session, same arguments); nothing ran yet.
    try {
      answer = await ask(askedIn);
    } catch (err) {
      const u = unavailable(err);
      return { kind: 'denied', code: u.code, text: u.text, decisionId: undefined, decided: false };
    }
  }
  if (answer.decision !== 'allow') {
    const denied: Outcome<T> = { kind: 'denied', code: answer.code, text: denialText(answer.code, answer.message, answer.session), decisionId: answer.decision_id || undefined, decided: true };
    if (answer.approval_id) denied.approvalId = answer.approval_id;
    // RATE_LIMITED: when the window ends, for an agent that reads _meta rather than the text.
    if (answer.retry_after_s !== undefined) denied.retryAfterS = answer.retry_after_s;
    return denied;
  }

  const decisionId = answer.decision_id;
  const started = performance.now();
  let result: T | undefined;
  let failure: { status: 'timeout' | 'cancelled' | 'error'; code: GatewayCode; message: string } | undefined;
  let measured: Measured = { bytes: 0, rows: undefined, isError: false };
  let oversize: OversizeMessageError | undefined;
  let upstreamResult: UpstreamCallResult;
  // Cancelled while the control plane decided: the call is not sent (the SDK would not send it either),
  // and its RESULT says so rather than that the upstream may have run it.
  const cancelledBeforeRun = signal.aborted;
  try {
    if (cancelledBeforeRun) throw new Error('cancelled before the call was sent');
    result = await run({ timeoutMs: limits.maxExecutionMs, signal });
    measured = measure(result);
    upstreamResult = measured.isError ? 'tool_error' : 'ok';
  } catch (err) {
    // Sent, the upstream had the call either way: an MCP cancellation asks it to stop, it cannot undo what ran
    // (a write cancelled 8 ms after it was sent was on disk), and the RESULT row must not read as "nothing happened".
    upstreamResult = 'cancelled';
    if (cancelledBeforeRun) failure = { status: 'cancelled', code: GATEWAY_CODE.CANCELLED, message: NOT_SENT };
    else if (signal.aborted) failure = { status: 'cancelled', code: GATEWAY_CODE.CANCELLED, message: `the agent cancelled the call; ${MAY_HAVE_RUN}` };
    else if (isTimeout(err)) {
      upstreamResult = 'timeout';
      failure = { status: 'timeout', code: GATEWAY_CODE.MAX_EXECUTION_TIME, message: `the call ran over the limit of ${limits.maxExecutionMs / 1000} s and was cancelled; ${MAY_HAVE_RUN}` };
    } else if (err instanceof OversizeMessageError) {
      // The upstream answered, with more than the gateway reads: a result of (at least) that size.
      upstreamResult = 'oversize';
      oversize = err;
      measured = { bytes: err.bytes, rows: undefined, isError: false };
    } else if (err instanceof UpstreamUnavailableError) {
      upstreamResult = 'unavailable';
      failure = { status: 'error', code: GATEWAY_CODE.UPSTREAM_UNAVAILABLE, message: err.message };
    } else {
      // An upstream error is what the upstream returned: measured and guarded like a result, since its
      // text reaches the agent (a query can put a whole table into an error message).
      upstreamResult = 'error';
      const message = (err as Error).message || String(err);
      failure = { status: 'error', code: GATEWAY_CODE.UPSTREAM_ERROR, message };
      measured = { bytes: Buffer.byteLength(message, 'utf8'), rows: undefined, isError: true };
    }
  }
  const elapsedMs = performance.now() - started;
  const durationMs = Math.max(0, Math.round(elapsedMs));
  const upstream: UpstreamCall | undefined = cancelledBeforeRun ? undefined : { result: upstreamResult, seconds: elapsedMs / 1000 };
  // Guarded: whatever the agent would carry away (a result, an upstream's error text). An oversize
  // answer is always over the limit; it is withheld whatever the limits say.
  let guard = failure === undefined || failure.code === GATEWAY_CODE.UPSTREAM_ERROR ? guardTrigger(limits, measured.bytes, measured.rows) : undefined;
  if (oversize && (!guard || !oversize.exact)) guard = { trigger: GATEWAY_CODE.LARGE_RESULT, message: `the result is over ${oversize.bytes} bytes, more than the gateway reads; it was withheld` };
  if (guard) failure = undefined;

  const status: ResultBody['status'] = failure ? failure.status : guard ? 'withheld' : measured.isError ? 'error' : 'success';
  const report: ResultBody = { status, duration_ms: durationMs, result_bytes: measured.bytes };
  if (measured.rows !== undefined) report.rows = measured.rows;
  if (failure) report.error = failure.message.slice(0, MAX_ERROR_TEXT);
  else if (guard) report.error = `${guard.trigger}: ${guard.message}`.slice(0, MAX_ERROR_TEXT);

  let recorded: ResultAnswerBody | undefined;
  let reportError: unknown;
  try {
    recorded = await ports.reportResult(decisionId, report);
  } catch (err) {
    reportError = err;
  }

  if (recorded?.action === 'withhold_and_halt') {
    // `trigger` is optional in the API: a withhold must still name a code.
    const trigger = recorded.trigger ?? guard?.trigger ?? GATEWAY_CODE.WITHHELD;
    const message = /\bwithheld\b/i.test(recorded.message) ? recorded.message : joinSentences(recorded.message, 'The result was withheld.');
    return { kind: 'withheld', trigger, decisionId, upstream, text: denialText(trigger, message, recorded.session) };
  }
  if (guard) return { kind: 'withheld', trigger: guard.trigger, decisionId, upstream, text: `${guard.trigger}: ${guard.message}` };
  if (failure?.code === GATEWAY_CODE.MAX_EXECUTION_TIME) return { kind: 'failed', code: failure.code, decisionId, upstream, text: `${failure.code}: ${failure.message}; it is not retried` };
  // The gateway's own texts (cancelled, upstream unavailable) carry nothing of the upstream's.
  if (failure && failure.code !== GATEWAY_CODE.UPSTREAM_ERROR) return { kind: 'failed', code: failure.code, decisionId, upstream, text: `${failure.code}: ${failure.message}` };
  if (reportError !== undefined) {
    // The call ran, but its RESULT (or the upstream's error text) could not be recorded or checked: the
    // agent does not get it.
    const u = unavailable(reportError);
    return { kind: 'withheld', trigger: u.code, decisionId, upstream, text: `${u.text} (the call ran; its result could not be recorded and was withheld)` };
  }
  if (failure) return { kind: 'failed', code: failure.code, decisionId, upstream, text: `${GATEWAY_CODE.UPSTREAM_ERROR}: ${boundedErrorText(failure.message, measured.bytes)}` };
  return { kind: 'ok', result: result as T, warning: answer.warning, decisionId, upstream };
}

/** An upstream error message as the agent reads it: at most MAX_AGENT_ERROR_BYTES, saying when it was cut. */
export function boundedErrorText(message: string, bytes = Buffer.byteLength(message, 'utf8')): string {
  if (bytes <= MAX_AGENT_ERROR_BYTES) return message;
  // A cut inside a multi-byte character decodes to U+FFFD: dropped.
  const cut = Buffer.from(message, 'utf8').subarray(0, MAX_AGENT_ERROR_BYTES).toString('utf8').replace(/\uFFFD+$/, '');
  return `${cut}… [killswitch: the upstream's error message was ${bytes} bytes; only the first ${MAX_AGENT_ERROR_BYTES} are shown]`;
}

const sleep = (ms: number, signal: AbortSignal): Promise<void> =>
  new Promise((done) => {
    const timer = setTimeout(finish, ms);
    function finish() {
      clearTimeout(timer);
      signal.removeEventListener('abort', finish);
      done();
    }
    signal.addEventListener('abort', finish, { once: true });
  });

/**
 * Waits for an operator to decide approval `id`, polling the control plane. Undefined once it is
 * approved; otherwise the code and text the agent gets (rejected, expired, cancelled, or still pending
 * at the gateway's timeout). A failed poll is retried until the timeout: the call never runs on it.
 */
async function waitForApproval(ports: CallPorts, id: string, firstMessage: string, signal: AbortSignal, notice: WaitNotice | undefined): Promise<{ code: string; text: string } | undefined> {
  const { timeoutMs, pollMs } = ports.approvalWait;
  const started = Date.now();
  const tell = (message: string) => notice?.(message, Date.now() - started).catch(() => {});
  await tell(`${firstMessage}. The gateway waits up to ${Math.round(timeoutMs / 1000)} s for an operator to decide approval ${id}.`);
  let last: ApprovalStatusAnswer | undefined;
  let lastError = '';
  for (;;) {
    await sleep(Math.min(pollMs, Math.max(0, started + timeoutMs - Date.now())), signal);
    if (signal.aborted) return { code: GATEWAY_CODE.CANCELLED, text: `${GATEWAY_CODE.CANCELLED}: the agent cancelled the call while it waited for approval ${id}` };
    try {
      last = await ports.approvalStatus(id);
      lastError = '';
    } catch (err) {
      if (err instanceof ControlPlaneError && (err.failure === 'rejected' || err.failure === 'unauthenticated')) {
        return { code: err.code ?? 'APPROVAL_REQUIRED', text: `${err.code ?? 'APPROVAL_REQUIRED'}: the control plane refused to show approval ${id} (${err.message}); the call did not run` };
      }
      lastError = (err as Error).message;
    }
    switch (last?.state) {
      case 'approved':
        await tell(`approval ${id}: ${last.message}; running the call`);
        return undefined;
      case 'rejected':
        return { code: 'APPROVAL_REJECTED', text: `APPROVAL_REJECTED: approval ${id} was ${last.message}; the call did not run` };
      case 'expired':
        return { code: 'APPROVAL_EXPIRED', text: `APPROVAL_EXPIRED: approval ${id} ${last.message}; the call did not run` };
      case 'used':
        return { code: 'APPROVAL_USED', text: `APPROVAL_USED: approval ${id} was already ${last.message}; the call did not run` };
      default:
        break;
    }
    const elapsed = Date.now() - started;
    if (elapsed >= timeoutMs) {
      const why = lastError ? ` (last poll failed: ${lastError})` : last ? ` (${last.message})` : '';
      return {
        code: 'APPROVAL_REQUIRED',
        text: `APPROVAL_REQUIRED: no operator decided approval ${id} within the gateway's ${Math.round(timeoutMs / 1000)} s${why}; the call did not run. Repeat the identical call once it is approved.`,
      };
    }
    await tell(`still waiting for an operator to approve (approval ${id}, ${Math.round(elapsed / 1000)} s of ${Math.round(timeoutMs / 1000)} s)${last ? `: ${last.message}` : ''}`);
  }
}
