import type { FastifyReply, FastifyRequest } from 'fastify';
import { AppError, unauthenticated } from '../errors.js';
import type { AgentPrincipal, Authenticator, GatewayPrincipal, OperatorPrincipal } from '../tokens/authenticator.js';
import { CredentialStoreUnavailable } from '../tokens/authenticator.js';
import { parseCredential } from '../tokens/format.js';
import type { OperatorRole } from '../tokens/store.js';

declare module 'fastify' {
  interface FastifyRequest {
    operator?: OperatorPrincipal;
    gateway?: GatewayPrincipal;
    agent?: AgentPrincipal;
  }
}

const ROLE_RANK: Record<OperatorRole, number> = { viewer: 1, operator: 2, owner: 3 };

export function bearer(req: FastifyRequest): string | undefined {
  const h = req.headers.authorization;
  if (typeof h !== 'string') return undefined;
  const m = /^Bearer\s+(\S+)\s*$/i.exec(h);
  return m?.[1];
}

export function agentTokenHeader(req: FastifyRequest): string | undefined {
  const h = req.headers['x-agent-token'];
  return typeof h === 'string' ? h.trim() : undefined;
}

async function authenticateOrUnavailable(auth: Authenticator, raw: string | undefined) {
  try {
    return await auth.authenticate(raw);
  } catch (err) {
    if (err instanceof CredentialStoreUnavailable) throw new AppError('SERVICE_UNAVAILABLE', 'Credential store unavailable; try again.');
    throw err;
  }
}

/** The agent token of X-Agent-Token (or `raw`): 401 unless it is one, 503 while the credential store is unavailable. */
export async function authenticateAgent(auth: Authenticator, raw: string | undefined): Promise<AgentPrincipal> {
  const principal = await authenticateOrUnavailable(auth, raw);
  if (principal.kind !== 'agent') throw unauthenticated();
  return principal;
}

/**
 * preHandler for the admin API. Agent tokens and gateway keys are refused with 403 MCP_TOKEN_FORBIDDEN
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

/** preHandler for gateway routes: a gateway key as Bearer. The agent token is checked by each route. */
export function requireGateway(auth: Authenticator) {
  return async (req: FastifyRequest, _reply: FastifyReply) => {
    const principal = await authenticateOrUnavailable(auth, bearer(req));
    if (principal.kind !== 'gateway') throw unauthenticated();
    req.gateway = principal;
  };
}
