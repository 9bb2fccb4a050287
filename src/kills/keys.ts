import type { CallContext } from '../decisions/types.js';
import type { Capability } from '../tokens/scopes.js';
import type { Environment } from '../tokens/store.js';

// What a kill stops, as one short string (its `target_key`). The gate reads `kill:<target_key>` under
// the installation's Redis prefix; a call is stopped when any of the keys of `killKeysFor` exists. Every
// part is validated by the schemas (server, role and project names hold no ':'), so two targets never
// share a key; session ids are free text but live under their own `session:` branch.

export const KILL_TARGETS = ['everything', 'server', 'capability', 'token', 'project', 'role', 'environment', 'session'] as const;
export type KillTargetKind = (typeof KILL_TARGETS)[number];

export interface KillTarget {
  target: KillTargetKind;
  server?: string | null | undefined;
  capability?: Capability | null | undefined;
  token_id?: string | null | undefined;
  project_id?: string | null | undefined;
  role?: string | null | undefined;
  environment?: Environment | null | undefined;
  session_id?: string | null | undefined;
}

const CAPABILITIES: readonly Capability[] = ['read', 'write', 'delete'];

/** The target's key suffix (stored in Postgres as target_key). Assumes the target was validated. */
export function targetKey(t: KillTarget): string {
  switch (t.target) {
    case 'everything':
      return 'all';
    case 'server':
      return `server:${t.server}`;
    case 'capability':
      return t.server ? `cap:${t.server}:${t.capability}` : `cap:${t.capability}`;
    case 'token':
      return `token:${t.token_id}`;
    case 'project':
      return `project:${t.project_id}`;
    case 'role':
      return `role:${t.role}`;
    case 'environment':
      return `env:${t.environment}`;
    case 'session':
      return `session:${t.session_id}`;
  }
}

/** The target in an operator's words, for messages, alerts and the timeline. */
export function describeTarget(t: KillTarget): string {
  switch (t.target) {
    case 'everything':
      return 'every MCP call';
    case 'server':
      return `server ${t.server}`;
    case 'capability':
      return t.server ? `${t.capability} calls on server ${t.server}` : `${t.capability} calls on every server`;
    case 'token':
      return `token ${t.token_id}`;
    case 'project':
      return `project ${t.project_id}`;
    case 'role':
      return `role ${t.role}`;
    case 'environment':
      return `environment ${t.environment}`;
    case 'session':
      return `session ${t.session_id}`;
  }
}

/**
 * The calls a kill of this target stops, as the subject of a sentence ("… are decided normally again"):
 * `describeTarget` names the target ("write calls on every server", "token <id>"), which cannot follow
 * "calls to" for every target. `plural` says which verb form follows.
 */
export function callsStoppedBy(t: KillTarget): { text: string; plural: boolean } {
  switch (t.target) {
    case 'everything':
      return { text: 'every MCP call', plural: false };
    case 'server':
      return { text: `calls to server ${t.server}`, plural: true };
    case 'capability':
      return { text: describeTarget(t), plural: true };
    case 'token':
      return { text: `calls made with token ${t.token_id}`, plural: true };
    case 'project':
      return { text: `calls made with the tokens of project ${t.project_id}`, plural: true };
    case 'role':
      return { text: `calls made with the tokens of role ${t.role}`, plural: true };
    case 'environment':
      return { text: `calls made with the tokens of environment ${t.environment}`, plural: true };
    case 'session':
      return { text: `calls in session ${t.session_id}`, plural: true };
  }
}

/**
 * The lift's answer when no other kill of the target is in force. `others`: the kills of other targets
 * still in force (a sentence), which may stop some of these calls all the same: then it does not say they
 * are decided normally again.
 */
export function liftedMessage(t: KillTarget, others?: string): string {
  const { text, plural } = callsStoppedBy(t);
  if (others) return `Lifted: this kill no longer stops ${text} on any replica. ${others}`;
  return `Lifted: ${text} ${plural ? 'are' : 'is'} decided normally again on every replica.`;
}

/**
 * Key suffixes of every kill that would stop this call. Always all nine: the gate reads them in the same
 * MGET as the state epoch, so checking a kind nobody killed costs next to nothing, and no replica-local
 * cache of "which kinds are in use" can ever be stale.
 */
export function killTargetKeysFor(call: CallContext): string[] {
  const server = call.call?.server ?? call.input.server;
  const capability = call.call?.capability;
  const keys = ['all', `server:${server}`];
  if (capability) keys.push(`cap:${capability}`, `cap:${server}:${capability}`);
  else for (const c of CAPABILITIES) keys.push(`cap:${c}`, `cap:${server}:${c}`);
  keys.push(`token:${call.agent.id}`, `project:${call.agent.projectId}`, `role:${call.agent.role}`, `env:${call.agent.environment}`, `session:${call.input.session_id}`);
  return keys;
}

/** Target keys whose kills matter to one thing an operator looks at (the incident timeline's `target`). */
export function keysAffecting(t: { server?: string; token?: { id: string; project_id: string; role: string; environment: string }; project?: string; session?: { id: string; token_id: string; project_id: string }; environment?: string }): string[] {
  const keys = ['all'];
  if (t.server) {
    keys.push(`server:${t.server}`);
    for (const c of CAPABILITIES) keys.push(`cap:${c}`, `cap:${t.server}:${c}`);
  }
  if (t.token) keys.push(`token:${t.token.id}`, `project:${t.token.project_id}`, `role:${t.token.role}`, `env:${t.token.environment}`);
  if (t.project) keys.push(`project:${t.project}`);
  if (t.session) keys.push(`session:${t.session.id}`, `token:${t.session.token_id}`, `project:${t.session.project_id}`);
  if (t.environment) keys.push(`env:${t.environment}`);
  return keys;
}
