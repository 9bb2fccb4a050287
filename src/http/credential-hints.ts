import { AppError, unauthenticated } from '../errors.js';
import { type CredentialRefusal, refusalOf, refused } from '../tokens/authenticator.js';
import { parseCredential } from '../tokens/format.js';

// What a 401 on a gateway route says (gateway integrator review: six different mistakes all read "Missing
// or invalid credential."). Which header is at fault and what it holds is told from the header's form and
// the credential's prefix and checksum, which are public. Whether a well-formed credential is unknown,
// revoked or expired is said only once the gateway key was accepted (the agent token's case).

const GATEWAY_FORM = '"Authorization: Bearer ksgw_..."';
const AGENT_FORM = 'the agent token alone (mcp_ro_..., mcp_rw_... or mcp_admin_...)';

/** Why the Authorization header of a gateway route holds no usable gateway key. */
export function gatewayKeyProblem(header: string | undefined): string {
  if (header === undefined || header.trim() === '') return `Missing credential: send the gateway key as ${GATEWAY_FORM} and the agent token in X-Agent-Token.`;
  const m = /^Bearer\s+(\S+)\s*$/i.exec(header);
  if (!m) return `Authorization must be ${GATEWAY_FORM}: the word Bearer, a space, then the gateway key.`;
  const kind = parseCredential(m[1]!)?.kind;
  if (kind === 'agent') return `Authorization holds an agent token: it takes the gateway key (${GATEWAY_FORM}); the agent token goes in X-Agent-Token.`;
  if (kind === 'operator') return `Authorization holds an operator key: gateway routes take a gateway key (${GATEWAY_FORM}); operator keys are for the admin API.`;
  // Before any credential was accepted: whether this key was ever issued is not said.
  if (kind === 'gateway') return 'The gateway key is unknown, revoked or expired: an operator lists and creates gateway keys (GET and POST /v1/gateway-keys, docs/gateway.md).';
  return 'Authorization does not hold a gateway key: one starts ksgw_ and is checked by its last characters (a character missing, added or changed?).';
}

/** Why X-Agent-Token holds no usable agent token. */
export function agentTokenProblem(header: string | undefined, refusal: CredentialRefusal | undefined): string {
  if (header === undefined || header === '') return `Missing X-Agent-Token: send ${AGENT_FORM} in it, beside the gateway key in Authorization.`;
  if (/^Bearer\s/i.test(header)) return `X-Agent-Token holds "Bearer ...": send ${AGENT_FORM}, without the word Bearer.`;
  const kind = parseCredential(header)?.kind;
  if (kind === 'gateway') return 'X-Agent-Token holds a gateway key: it takes the agent token (mcp_...); the gateway key goes in Authorization.';
  if (kind === 'operator') return 'X-Agent-Token holds an operator key: it takes an agent token (mcp_...); operator keys are for the admin API.';
  if (kind === 'agent') return `The agent token is ${refusedAs(refusal)}: ask an operator for a token (docs/tokens.md).`;
  return 'X-Agent-Token does not hold an agent token: one starts mcp_ro_, mcp_rw_ or mcp_admin_ and is checked by its last characters (a character missing, added or changed?).';
}

/**
 * POST /v1/sessions/:id/close with an operator key beside X-Agent-Token: the route's two forms mixed (a
 * gateway holding an operator key, or an operator sending a stray header); both are told.
 */
export const OPERATOR_KEY_WITH_AGENT_TOKEN = `Authorization holds an operator key beside X-Agent-Token: a gateway closes its agent's session with its gateway key (${GATEWAY_FORM}) and the agent token in X-Agent-Token; an operator closes one with the operator key alone, without X-Agent-Token.`;

function refusedAs(refusal: CredentialRefusal | undefined): string {
  if (refusal?.reason === 'revoked') return 'revoked';
  if (refusal?.reason === 'expired') return 'expired';
  return 'not known to this control plane (another installation’s, or deleted)';
}

/**
 * The 401 for `err` (a refusal of Authenticator.authenticate, or undefined for a credential of another
 * kind) told with `problem`; the refusal RefusedCredentials audits is kept. Any other error is returned as it is.
 */
export function unauthenticatedSaying(err: unknown, problem: (refusal: CredentialRefusal | undefined) => string): unknown {
  if (err !== undefined && !(err instanceof AppError && err.code === 'UNAUTHENTICATED')) return err;
  const refusal = refusalOf(err);
  const message = problem(refusal);
  return refusal ? refused(refusal, message) : unauthenticated(message);
}
