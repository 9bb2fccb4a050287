import type { FastifyBaseLogger, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { LRUCache } from 'lru-cache';
import type { AdminAction, CredentialEnded } from '../audit/rows.js';
import { AppError, unauthenticated } from '../errors.js';
import type { AgentPrincipal, Authenticator, GatewayPrincipal, OperatorPrincipal } from '../tokens/authenticator.js';
import { CredentialStoreUnavailable, refusalOf } from '../tokens/authenticator.js';
import { type CredentialKind, parseCredential } from '../tokens/format.js';
import type { OperatorRole } from '../tokens/store.js';
import { agentTokenProblem, gatewayKeyProblem, unauthenticatedSaying } from './credential-hints.js';
import { headerCount, repeatedHeaderProblem } from './repeated-header.js';

declare module 'fastify' {
  interface FastifyRequest {
    operator?: OperatorPrincipal;
    gateway?: GatewayPrincipal;
    /** The agent token of X-Agent-Token, checked by requireGateway before the body is read. */
    agent?: AgentPrincipal;
    /** Set instead of `agent` on a route whose handler answers for a credential store that is unavailable (AgentTokenRule). */
    agentUnchecked?: true;
    /** Why `agent` ended (revoked, expired) on a route that accepts ended tokens (AgentTokenRule). */
    agentEnded?: CredentialEnded;
  }
}

/**
 * Declares the request's credential slots, so every request object has the same shape (Fastify's advice for
 * properties set per request; the decision path sets two of them on every call).
 */
export function decorateCredentials(app: FastifyInstance): void {
  for (const slot of ['operator', 'gateway', 'agent', 'agentUnchecked', 'agentEnded'] as const) app.decorateRequest(slot, undefined);
}

const STORE_UNAVAILABLE = 'Credential store unavailable; try again.';
const ROLE_RANK: Record<OperatorRole, number> = { viewer: 1, operator: 2, owner: 3 };

export function bearer(req: FastifyRequest): string | undefined {
  const h = req.headers.authorization;
  if (typeof h !== 'string') return undefined;
  refuseRepeated(req, 'authorization');
  const m = /^Bearer\s+(\S+)\s*$/i.exec(h);
  return m?.[1];
}

export function agentTokenHeader(req: FastifyRequest): string | undefined {
  const h = req.headers['x-agent-token'];
  if (typeof h !== 'string') return undefined;
  // Node joins repeated values with ", " (a token has no comma): only then are they counted.
  if (h.includes(',')) refuseRepeated(req, 'x-agent-token');
  return h.trim();
}

/** 400 INVALID_REQUEST naming the header when the request carries it more than once. */
function refuseRepeated(req: FastifyRequest, name: 'authorization' | 'x-agent-token'): void {
  const problem = repeatedHeaderProblem(name, headerCount(req.raw, name));
  if (problem) throw new AppError('INVALID_REQUEST', `${name}: ${problem}`, [{ field: name, problem }]);
}

async function authenticateOrUnavailable(auth: Authenticator, raw: string | undefined) {
  try {
    return await auth.authenticate(raw);
  } catch (err) {
    if (err instanceof CredentialStoreUnavailable) throw new AppError('SERVICE_UNAVAILABLE', STORE_UNAVAILABLE);
    throw err;
  }
}

/** A 401 of an agent token (X-Agent-Token) saying what is wrong with the header; other errors as they are. */
function agentRefused(err: unknown, raw: string | undefined): unknown {
  return unauthenticatedSaying(err, (refusal) => agentTokenProblem(raw, refusal));
}

/**
 * onRequest hook of the admin API. Agent tokens and gateway keys are refused with 403 MCP_TOKEN_FORBIDDEN
 * (seed 004: an AI can prepare, only a human can apply), recognised by prefix and checksum alone. With
 * `allProjects`, the route acts on the whole installation (gateway keys, tool definitions shared by every
 * project, the log level, a full audit verify): a key limited to projects gets 403 FORBIDDEN.
 */
export function requireOperator(auth: Authenticator, minRole: OperatorRole, opts: { allProjects?: boolean } = {}) {
  return async (req: FastifyRequest, _reply: FastifyReply) => {
    const raw = bearer(req);
    const parsed = raw ? parseCredential(raw) : undefined;
    if (parsed?.kind === 'agent' || parsed?.kind === 'gateway' || agentTokenHeader(req)) {
      throw new AppError('MCP_TOKEN_FORBIDDEN', 'The admin API accepts operator keys only; agent tokens and gateway keys are refused.');
    }
    const principal = await authenticateOrUnavailable(auth, raw);
    if (principal.kind !== 'operator') throw unauthenticated();
    if (ROLE_RANK[principal.role] < ROLE_RANK[minRole]) {
      throw new AppError('FORBIDDEN', `This action needs the ${minRole} role; this key has ${principal.role}.`);
    }
    if (opts.allProjects && principal.projects !== null) {
      throw new AppError('FORBIDDEN', `This action reaches every project; this key is limited to projects ${principal.projects.join(', ')}: use a key without a project limit.`);
    }
    req.operator = principal;
  };
}

/** Project visibility for project-limited operators: everything else is reported as not found. */
export function canSeeProject(op: OperatorPrincipal, projectId: string): boolean {
  return op.projects === null || op.projects.includes(projectId);
}

/** How a gateway route takes an agent token that is not simply valid (requireGateway). */
export interface AgentTokenRule {
  /**
   * The credential store is unavailable: 503 SERVICE_UNAVAILABLE (with this message, or a default), or
   * 'handler': the request goes on with `req.agentUnchecked` set, for a handler that answers itself.
   */
  unavailable?: { message: string } | 'handler';
  /**
   * A revoked or expired agent token of ours is accepted, `req.agentEnded` saying which: the result of a call
   * allowed before its token ended (the call ran, so its RESULT still counts).
   */
  acceptEnded?: boolean;
}

/**
 * onRequest hook of the gateway routes: a gateway key as Bearer, then the agent token of X-Agent-Token, both
 * before the body is read (docs/errors.md: a bad credential is never told to fix its body). Sets
 * `req.gateway` and `req.agent`, so the handler does not authenticate again.
 */
export function requireGateway(auth: Authenticator, rule: AgentTokenRule = {}) {
  return async (req: FastifyRequest, _reply: FastifyReply) => {
    req.gateway = await gatewayOf(auth, req);
    await checkAgentToken(auth, req, rule);
  };
}

async function gatewayOf(auth: Authenticator, req: FastifyRequest): Promise<GatewayPrincipal> {
  const header = req.headers.authorization;
  let principal: Awaited<ReturnType<Authenticator['authenticate']>>;
  try {
    principal = await authenticateOrUnavailable(auth, bearer(req));
  } catch (err) {
    throw unauthenticatedSaying(err, () => gatewayKeyProblem(header));
  }
  if (principal.kind !== 'gateway') throw unauthenticatedSaying(undefined, () => gatewayKeyProblem(header));
  return principal;
}

async function checkAgentToken(auth: Authenticator, req: FastifyRequest, rule: AgentTokenRule): Promise<void> {
  const raw = agentTokenHeader(req);
  let principal: Awaited<ReturnType<Authenticator['authenticate']>>;
  try {
    principal = await auth.authenticate(raw);
  } catch (err) {
    if (err instanceof CredentialStoreUnavailable) {
      if (rule.unavailable === 'handler') {
        req.agentUnchecked = true;
        return;
      }
      throw storeUnavailable(rule);
    }
    if (rule.acceptEnded && (await acceptedAsEnded(auth, req, raw, err, rule))) return;
    throw agentRefused(err, raw);
  }
  if (principal.kind !== 'agent') throw agentRefused(undefined, raw);
  req.agent = principal;
}

function storeUnavailable(rule: AgentTokenRule): AppError {
  return new AppError('SERVICE_UNAVAILABLE', typeof rule.unavailable === 'object' ? rule.unavailable.message : STORE_UNAVAILABLE);
}

/** Accepts a revoked or expired agent token of ours (AgentTokenRule.acceptEnded): found by its hash, uncached. */
async function acceptedAsEnded(auth: Authenticator, req: FastifyRequest, raw: string | undefined, err: unknown, rule: AgentTokenRule): Promise<boolean> {
  const refusal = refusalOf(err);
  if (refusal?.reason !== 'revoked' && refusal?.reason !== 'expired') return false;
  let ended: AgentPrincipal | undefined;
  try {
    ended = await auth.endedAgent(raw);
  } catch (e) {
    if (e instanceof CredentialStoreUnavailable) throw storeUnavailable(rule);
    throw e;
  }
  if (!ended) return false;
  req.agent = ended;
  req.agentEnded = refusal.reason;
  return true;
}

const CREDENTIAL_TYPE: Record<CredentialKind, string> = { agent: 'agent_token', gateway: 'gateway_key', operator: 'operator_key' };
/** One audit row (and warn line) per revoked or expired credential a minute on each replica; one line a minute for the rest. */
const REFUSAL_WINDOW_MS = 60_000;
const MAX_TRACKED = 10_000;

/**
 * Leaves a trace of refused credentials (security review: a revoked token's use left none). A credential
 * recognised as revoked or expired (its hash matched a row: the authenticator knows it from the lookup it
 * made anyway, nothing is queried here) gets an AUTH_FAILURE audit row and a warn line, at most one per
 * credential a minute on each replica, so a flood cannot fill the trail. Unknown and malformed credentials
 * are noise: one info line a minute, counting the ones left out.
 */
export class RefusedCredentials {
  /** Credentials given a row in the last minute (the least recently used go first when full). */
  private readonly recentRows: LRUCache<string, true>;
  private noiseLoggedAt = Number.NEGATIVE_INFINITY;
  private noiseLeftOut = 0;

  constructor(
    private readonly audit: { recordAdmin(a: AdminAction): Promise<void> },
    private readonly log: Pick<FastifyBaseLogger, 'info' | 'warn'>,
    private readonly now: () => number = Date.now,
  ) {
    // ttlResolution 0: the clock is read on every look (the window is exact, and a test's clock is obeyed).
    this.recentRows = new LRUCache({ max: MAX_TRACKED, ttl: REFUSAL_WINDOW_MS, ttlResolution: 0, perf: { now: () => this.now() } });
  }

  /** Registers the onError hook: every 401 the authenticator produced passes here. */
  install(app: FastifyInstance): void {
    app.addHook('onError', async (req, _reply, err) => this.note(req, err));
  }

  note(req: FastifyRequest, err: unknown): void {
    const r = refusalOf(err);
    if (!r) return;
    const t = this.now();
    const where = { method: req.method, route: req.routeOptions?.url ?? req.url, ip: req.ip, gateway_id: req.gateway?.id ?? null };
    if (r.reason === 'revoked' || r.reason === 'expired') {
      const type = CREDENTIAL_TYPE[r.kind];
      const key = `${type}:${r.id}`;
      if (this.recentRows.has(key)) return;
      this.recentRows.set(key, true);
      const details = { presented_type: type, presented_id: r.id, reason: r.reason, token_type: r.tokenType ?? null, ...where };
      this.log.warn(details, `a ${r.reason} ${type.replace('_', ' ')} was presented and refused (401)`);
      void this.audit
        .recordAdmin({ actor: 'auth', kind: 'AUTH_FAILURE', action: `credential.${r.reason}`, target: key, projectId: r.projectId, ip: req.ip, details })
        .catch(() => {});
      return;
    }
    if (t - this.noiseLoggedAt < REFUSAL_WINDOW_MS) {
      this.noiseLeftOut++;
      return;
    }
    this.log.info(
      { reason: r.reason, presented_type: r.reason === 'unknown' ? CREDENTIAL_TYPE[r.kind] : null, ...where, left_out: this.noiseLeftOut },
      'an unknown or malformed credential was refused (401); at most one such line a minute (left_out: since the last)',
    );
    this.noiseLoggedAt = t;
    this.noiseLeftOut = 0;
  }
}
