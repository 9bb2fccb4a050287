import http from 'node:http';
import https from 'node:https';
import type { Static } from 'typebox';
import type { DecisionAnswer, DecisionBody, ResultAnswer, ResultBody } from '../decisions/schemas.js';
import { timeoutAfterReads } from '../reply-timeout.js';
import type { ReportedTool } from './catalog.js';
import type { UpstreamIdentity } from './config.js';

// The gateway's side of DESIGN.md §3: every request carries the gateway key as Bearer and the agent
// token as X-Agent-Token. Plain node:http with a keep-alive agent: it is on the path of every tool call,
// and fetch costs noticeably more per request on Node 20.

export type ResultAnswerBody = Static<typeof ResultAnswer>;

export interface ToolReportAnswer {
  servers: Array<{
    name: string;
    in_policy: boolean;
    tools: Array<{ name: string; hash: string; status: string; callable: boolean; capability?: 'read' | 'write' | 'delete' | null; reason?: string }>;
    /** Whether the token may read this server's resources / get its prompts (absent from older control planes: not). */
    resources?: { callable: boolean; reason?: string };
    prompts?: { callable: boolean; reason?: string };
  }>;
}

export interface SessionAnswer {
  session_id: string;
  /** What the declared scope names that will be refused (a server the policy does not list). */
  warnings?: Array<{ field: string; problem: string }>;
  [k: string]: unknown;
}

/** GET /v1/gateway/approvals/:id (src/approvals/schemas.ts ApprovalStatusSchema). */
export interface ApprovalStatusAnswer {
  id: string;
  state: 'pending' | 'approved' | 'rejected' | 'expired' | 'used';
  expires_at: string;
  reason: string | null;
  message: string;
}

export interface DeclaredScope {
  read_only?: boolean;
  servers?: string[];
  purpose?: string;
}

/** Why a 2xx body is not a decision, or undefined: an allow must say OK and carry its decision_id. */
export function decisionProblem(answer: unknown): string | undefined {
  if (answer === null || typeof answer !== 'object' || Array.isArray(answer)) return 'not a JSON object';
  const a = answer as Record<string, unknown>;
  if (a['decision'] !== 'allow' && a['decision'] !== 'deny') return 'decision is neither "allow" nor "deny"';
  if (typeof a['code'] !== 'string' || a['code'] === '') return 'code is missing';
  if (typeof a['decision_id'] !== 'string') return 'decision_id is missing';
  if (a['decision'] === 'allow' && (a['code'] !== 'OK' || a['decision_id'] === '')) return 'an allow without code OK and a decision_id';
  return undefined;
}

/**
 * Why a 2xx body is not the answer to this result report, or undefined. Only a recorded result with a
 * known action for this decision releases anything; whatever else answered withholds it.
 */
export function resultAnswerProblem(answer: unknown, decisionId: string): string | undefined {
  if (answer === null || typeof answer !== 'object' || Array.isArray(answer)) return 'not a JSON object';
  const a = answer as Record<string, unknown>;
  if (a['decision_id'] !== decisionId) return `decision_id is not ${JSON.stringify(decisionId)}`;
  if (a['recorded'] !== true) return 'recorded is not true';
  if (a['action'] !== 'none' && a['action'] !== 'withhold_and_halt') return 'action is neither "none" nor "withhold_and_halt"';
  return undefined;
}

/** Why a 2xx body is not a session the control plane opened, or undefined. */
export function sessionProblem(answer: unknown): string | undefined {
  if (answer === null || typeof answer !== 'object' || Array.isArray(answer)) return 'not a JSON object';
  const a = answer as Record<string, unknown>;
  if (typeof a['session_id'] !== 'string' || a['session_id'] === '') return 'session_id is missing';
  return undefined;
}

/** Why a 2xx body is not the answer to a tool report, or undefined: nothing is listed on any other. */
export function toolReportProblem(answer: unknown): string | undefined {
  if (answer === null || typeof answer !== 'object' || Array.isArray(answer)) return 'not a JSON object';
  const servers = (answer as Record<string, unknown>)['servers'];
  if (!Array.isArray(servers)) return 'servers is not a list';
  for (const [i, s] of servers.entries()) {
    if (s === null || typeof s !== 'object' || typeof s.name !== 'string' || !Array.isArray(s.tools)) return `servers[${i}] has no name or no list of tools`;
    for (const [j, t] of (s.tools as unknown[]).entries()) {
      const tool = t as Record<string, unknown> | null;
      if (tool === null || typeof tool !== 'object' || typeof tool['name'] !== 'string' || typeof tool['hash'] !== 'string' || typeof tool['callable'] !== 'boolean') {
        return `servers[${i}].tools[${j}] lacks a name, hash or callable`;
      }
    }
  }
  return undefined;
}

/** Why a 2xx body is not the answer to a session close, or undefined. */
export function closeAnswerProblem(answer: unknown): string | undefined {
  if (answer === null || typeof answer !== 'object' || Array.isArray(answer)) return 'not a JSON object';
  return typeof (answer as Record<string, unknown>)['already_closed'] === 'boolean' ? undefined : 'already_closed is missing';
}

export type ControlPlaneFailure = 'timeout' | 'unreachable' | 'unauthenticated' | 'rejected' | 'unavailable';

/** What the gateway's log says the control plane did with `what` (the request): refused it, gave no usable answer, or none. */
export function failureWords(failure: ControlPlaneFailure, what?: string): string {
  if (failure === 'rejected' || failure === 'unauthenticated') return `refused ${what ?? 'it'}`;
  if (failure === 'unavailable') return what ? `gave no usable answer to ${what}` : 'gave no usable answer';
  return what ? `did not answer ${what}` : 'did not answer';
}

/**
 * Why a request to the control plane failed. `message` is what the agent may read (it ends up in a tool
 * result); `detail`, for the gateway's own log only, adds where the control plane is and the socket's
 * error (an address inside the company network is not the agent's to know).
 */
export class ControlPlaneError extends Error {
  constructor(
    readonly failure: ControlPlaneFailure,
    message: string,
    readonly status?: number,
    readonly code?: string,
    readonly detail?: string,
  ) {
    super(message);
    this.name = 'ControlPlaneError';
  }
}

/** `answer` as the control plane's answer to `path`; a 2xx body that is not one is DEPENDENCY_UNAVAILABLE (ControlPlaneError 'unavailable'). */
function checked<T>(path: string, what: string, answer: unknown, problemOf: (answer: unknown) => string | undefined): T {
  const problem = problemOf(answer);
  if (problem) throw new ControlPlaneError('unavailable', `the answer to ${path} is not ${what} (${problem})`);
  return answer as T;
}

/** What the gateway's log says of a failure: the agent's text and, for a control plane not reached, where and why. */
export function logText(err: unknown): string {
  const message = err instanceof Error ? err.message : String(err);
  return err instanceof ControlPlaneError && err.detail ? `${message}: ${err.detail}` : message;
}

/** The socket's error code (ECONNREFUSED, ENOTFOUND, ECONNRESET, a TLS one such as ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED ...) or a plain word. */
const socketErrorCode = (err: Error): string => {
  const code = (err as NodeJS.ErrnoException).code;
  return typeof code === 'string' && /^[A-Z][A-Z0-9_]*$/.test(code) ? code : 'connection failed';
};

export interface ControlPlaneOptions {
  url: string;
  gatewayKey: string;
  timeoutMs: number;
  /**
   * For an https:// url (`killswitch.tls`): the CA to trust instead of Node's own list, and the client
   * certificate and key for a control plane that requires mutual TLS (TLS_CLIENT_CA_FILE).
   */
  tls?: ControlPlaneTls;
}

export interface ControlPlaneTls {
  ca?: Buffer;
  cert?: Buffer;
  key?: Buffer;
}

/** The requests the gateway makes, as its metrics name them (src/gateway/metrics.ts). */
export type ControlPlaneRequest = 'session' | 'session_close' | 'tool_report' | 'decision' | 'result' | 'approval';

/** Told of every request once it is settled: `ok`, or why there was no usable answer, and how long the gateway waited. */
export type ControlPlaneObserver = (request: ControlPlaneRequest, result: 'ok' | ControlPlaneFailure, seconds: number) => void;

export class ControlPlaneClient {
  private readonly base: URL;
  private readonly agent: http.Agent;
  private readonly request: typeof http.request;

  constructor(
    private readonly opts: ControlPlaneOptions,
    private readonly observe?: ControlPlaneObserver,
  ) {
    this.base = new URL(opts.url);
    const secure = this.base.protocol === 'https:';
    this.agent = secure ? new https.Agent({ keepAlive: true, maxSockets: 64, ...opts.tls }) : new http.Agent({ keepAlive: true, maxSockets: 64 });
    this.request = secure ? https.request : http.request;
  }

  get timeoutMs(): number {
    return this.opts.timeoutMs;
  }

  openSession(agentToken: string, scope: DeclaredScope): Promise<SessionAnswer> {
    // Whatever answered (a proxy, a wrong URL) opened nothing: every call would be refused for another reason.
    return this.observed('session', async () => checked<SessionAnswer>('/v1/sessions', 'a session', await this.post<unknown>('/v1/sessions', agentToken, scope), sessionProblem));
  }

  /**
   * Closes this agent's control-plane session (POST /v1/sessions/:id/close). Called on the way out, so
   * with its own, usually shorter, timeout: a control plane that does not answer must not hold up the exit.
   */
  closeSession(agentToken: string, sessionId: string, timeoutMs = this.opts.timeoutMs): Promise<{ already_closed: boolean; message: string }> {
    return this.observed('session_close', async () => {
      const answer = await this.send<unknown>('POST', `/v1/sessions/${encodeURIComponent(sessionId)}/close`, agentToken, undefined, timeoutMs);
      // A 2xx from something else (a proxy, a wrong URL) closed nothing: the log must not say it did.
      return checked(`/v1/sessions/${sessionId}/close`, 'a close answer', answer, closeAnswerProblem);
    });
  }

  reportTools(agentToken: string, servers: Array<{ name: string; identity: UpstreamIdentity; tools: ReportedTool[] }>): Promise<ToolReportAnswer> {
    return this.observed('tool_report', async () => checked<ToolReportAnswer>('/v1/gateway/tools', 'a tool report answer', await this.post<unknown>('/v1/gateway/tools', agentToken, { servers }), toolReportProblem));
  }

  decide(agentToken: string, body: DecisionBody): Promise<DecisionAnswer> {
    // Whatever answered (a proxy, a wrong URL, another service) did not decide: nothing runs on it.
    return this.observed('decision', async () => checked<DecisionAnswer>('/v1/decisions', 'a decision', await this.post<unknown>('/v1/decisions', agentToken, body), decisionProblem));
  }

  reportResult(agentToken: string, decisionId: string, body: ResultBody): Promise<ResultAnswerBody> {
    return this.observed('result', async () => {
      const answer = await this.post<unknown>(`/v1/decisions/${encodeURIComponent(decisionId)}/result`, agentToken, body);
      // Not the control plane's word on this result (a proxy, a wrong URL): the result stays withheld.
      return checked<ResultAnswerBody>(`/v1/decisions/${decisionId}/result`, 'a result answer', answer, (a) => resultAnswerProblem(a, decisionId));
    });
  }

  approvalStatus(agentToken: string, approvalId: string): Promise<ApprovalStatusAnswer> {
    return this.observed('approval', () => this.send<ApprovalStatusAnswer>('GET', `/v1/gateway/approvals/${encodeURIComponent(approvalId)}`, agentToken, undefined));
  }

  /**
   * `ask()`, told to the observer once settled: from before the request is sent until the answer is
   * checked, so a 2xx that is not an answer (a proxy) counts as the `unavailable` it is to the caller.
   */
  private observed<T>(request: ControlPlaneRequest, ask: () => Promise<T>): Promise<T> {
    const observe = this.observe;
    if (!observe) return ask();
    const started = performance.now();
    return ask().then(
      (answer) => {
        observe(request, 'ok', (performance.now() - started) / 1000);
        return answer;
      },
      (err: unknown) => {
        observe(request, err instanceof ControlPlaneError ? err.failure : 'unavailable', (performance.now() - started) / 1000);
        throw err;
      },
    );
  }

  close(): void {
    this.agent.destroy();
  }

  private post<T>(path: string, agentToken: string, body: unknown): Promise<T> {
    return this.send<T>('POST', path, agentToken, body);
  }

  private send<T>(method: 'GET' | 'POST', path: string, agentToken: string, body: unknown, timeoutMs = this.opts.timeoutMs): Promise<T> {
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    const url = new URL(path.replace(/^\//, ''), this.base.href.endsWith('/') ? this.base.href : `${this.base.href}/`);
    return new Promise<T>((resolveAnswer, reject) => {
      let settled = false;
      const fail = (err: ControlPlaneError) => {
        if (settled) return;
        settled = true;
        reject(err);
      };
      const req = this.request(
        url,
        {
          method,
          agent: this.agent,
          headers: {
            authorization: `Bearer ${this.opts.gatewayKey}`,
            'x-agent-token': agentToken,
            ...(payload ? { 'content-type': 'application/json', 'content-length': payload.length } : {}),
          },
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('error', (err) =>
            fail(new ControlPlaneError('unreachable', `control plane response broke off (${socketErrorCode(err)})`, undefined, undefined, `${this.base.origin}: ${err.message}`)),
          );
          res.on('end', () => {
            if (settled) return;
            const status = res.statusCode ?? 0;
            let parsed: unknown;
            try {
              parsed = JSON.parse(Buffer.concat(chunks).toString('utf8'));
            } catch {
              parsed = undefined;
            }
            if (status >= 200 && status < 300 && parsed !== undefined) {
              settled = true;
              clearTimeout(timer);
              resolveAnswer(parsed as T);
              return;
            }
            const error = (parsed as { error?: { code?: string; message?: string } } | undefined)?.error;
            const message = error?.message ?? `HTTP ${status}`;
            clearTimeout(timer);
            if (status === 401) fail(new ControlPlaneError('unauthenticated', message, status, error?.code));
            else if (status >= 400 && status < 500) fail(new ControlPlaneError('rejected', message, status, error?.code));
            else fail(new ControlPlaneError('unavailable', `control plane answered ${status}: ${message}`, status, error?.code));
          });
        },
      );
      // Not a plain timer: after the gateway's own event loop was held longer than timeoutMs (one event loop
      // serves every agent), it would fail an answer already waiting in the socket, and deny a call the
      // control plane allowed in time. The socket is read once first (src/reply-timeout.ts).
      const timer = timeoutAfterReads(
        timeoutMs,
        () => settled,
        () => {
          fail(new ControlPlaneError('timeout', `control plane did not answer ${path} within ${timeoutMs} ms`));
          req.destroy();
        },
      );
      req.on('error', (err) => {
        clearTimeout(timer);
        fail(new ControlPlaneError('unreachable', `control plane unreachable (${socketErrorCode(err)})`, undefined, undefined, `at ${this.base.origin}: ${err.message}`));
      });
      req.end(payload);
    });
  }
}
