import type { Pool } from 'pg';
import { isUuid } from '../ids.js';
import { sessionStore } from '../sessions/store.js';
import type { ConstraintView, StrategyView } from './service.js';

// What GET /v1/flags shows a key limited to projects. Unleash constraints name agent tokens (`userId`),
// sessions (`sessionId`) and projects (`projectId`) of the whole installation: a kill of one of beta's tokens
// written as a constraint would show beta's token ids and project name to a key limited to alpha, which no
// other read of the admin API does (docs/tokens.md, "Operator keys limited to projects"). Such values are
// withheld unless they name the key's own projects (a token or session of them, or the project itself), and
// counted, so the operator still sees that the constraint names more. Every other field (role, server, tool,
// capability, tokenType, mcpEnvironment) holds policy names the whole installation shares, shown as they are.

/** Context fields whose values name a project's objects, and how each is looked up. */
const NAMING_FIELDS = { userId: 'token', sessionId: 'session', projectId: 'project' } as const;
type Naming = (typeof NAMING_FIELDS)[keyof typeof NAMING_FIELDS];

/** The strategy parameter of Unleash's `userWithId` strategy: token ids, comma-separated. */
const USER_IDS_PARAMETER = 'userIds';

export interface WithheldConstraint extends ConstraintView {
  /** How many of `values` were withheld because they name another project's token, session or project. */
  valuesWithheld: number;
}

export interface WithheldStrategy extends Omit<StrategyView, 'constraints' | 'segments'> {
  constraints: WithheldConstraint[];
  segments: Array<{ id: number; constraints: WithheldConstraint[] | null }>;
  /** How many ids were withheld from the `userIds` parameter (userWithId strategy). */
  parametersWithheld: number;
}

function naming(contextName: string): Naming | undefined {
  return Object.hasOwn(NAMING_FIELDS, contextName) ? NAMING_FIELDS[contextName as keyof typeof NAMING_FIELDS] : undefined;
}

function userIdsOf(parameters: Record<string, string>): string[] {
  const text = parameters[USER_IDS_PARAMETER];
  return text === undefined ? [] : text.split(',').map((s) => s.trim()).filter((s) => s !== '');
}

/** Every token and session id the strategies' constraints and parameters name (UUID-shaped ones only). */
function namedIds(strategies: readonly StrategyView[]): { tokens: Set<string>; sessions: Set<string> } {
  const tokens = new Set<string>();
  const sessions = new Set<string>();
  const visit = (c: ConstraintView) => {
    const kind = naming(c.contextName);
    if (kind !== 'token' && kind !== 'session') return;
    for (const v of c.values) if (isUuid(v)) (kind === 'token' ? tokens : sessions).add(v.toLowerCase());
  };
  for (const s of strategies) {
    s.constraints.forEach(visit);
    for (const sg of s.segments) sg.constraints?.forEach(visit);
    for (const id of userIdsOf(s.parameters)) if (isUuid(id)) tokens.add(id.toLowerCase());
  }
  return { tokens, sessions };
}

/**
 * The project of each token and session id named, read in two queries. Null when Postgres cannot say:
 * the caller then withholds every token and session id (a limited key never sees what it cannot check).
 */
export async function projectsOfNamedIds(db: Pool, strategies: readonly StrategyView[]): Promise<Map<string, string> | null> {
  const { tokens, sessions } = namedIds(strategies);
  return sessionStore.projectsOf(db, { tokens: [...tokens], sessions: [...sessions] }).catch(() => null);
}

/** Whether a key limited to `projects` may see this value of a naming field. */
function visible(kind: Naming, value: string, projects: readonly string[], owners: Map<string, string> | null): boolean {
  if (kind === 'project') return projects.includes(value);
  const owner = owners?.get(value.toLowerCase());
  return owner !== undefined && projects.includes(owner);
}

function constraintFor(c: ConstraintView, projects: readonly string[] | null, owners: Map<string, string> | null): WithheldConstraint {
  const kind = naming(c.contextName);
  if (projects === null || kind === undefined) return { ...c, valuesWithheld: 0 };
  const values = c.values.filter((v) => visible(kind, v, projects, owners));
  // The single value of NUM_/DATE_/SEMVER_ operators names nothing of a project: those operators are not
  // used on these fields, and a value there is withheld all the same.
  const value = c.value !== null && !visible(kind, c.value, projects, owners) ? null : c.value;
  return { ...c, values, value, valuesWithheld: c.values.length - values.length + (value === c.value ? 0 : 1) };
}

/**
 * The strategies as a key limited to `projects` may see them (`projects` null: every value shown).
 * `owners` maps token and session ids to their projects (projectsOfNamedIds); null withholds them all.
 */
export function strategiesFor(strategies: readonly StrategyView[], projects: readonly string[] | null, owners: Map<string, string> | null): WithheldStrategy[] {
  return strategies.map((s) => {
    const constraints = s.constraints.map((c) => constraintFor(c, projects, owners));
    const segments = s.segments.map((sg) => ({ id: sg.id, constraints: sg.constraints ? sg.constraints.map((c) => constraintFor(c, projects, owners)) : null }));
    if (projects === null || s.parameters[USER_IDS_PARAMETER] === undefined) return { ...s, constraints, segments, parametersWithheld: 0 };
    const ids = userIdsOf(s.parameters);
    const shown = ids.filter((id) => visible('token', id, projects, owners));
    return { ...s, parameters: { ...s.parameters, [USER_IDS_PARAMETER]: shown.join(',') }, constraints, segments, parametersWithheld: ids.length - shown.length };
  });
}
