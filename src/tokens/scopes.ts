import type { TokenType } from './format.js';

// Seed 000's scope model: `class:action`. Each scope has the capability it grants (read / write /
// delete) and the token types that may hold it. Defaults per type are exactly seed 000's lists.

export type Capability = 'read' | 'write' | 'delete';

export interface ScopeSpec {
  scope: string;
  capability: Capability;
  allowedTypes: readonly TokenType[];
  doc: string;
}

const ALL: readonly TokenType[] = ['ro', 'rw', 'admin'];
const WRITERS: readonly TokenType[] = ['rw', 'admin'];
const ADMIN: readonly TokenType[] = ['admin'];

export const SCOPES: readonly ScopeSpec[] = [
  { scope: 'db:select', capability: 'read', allowedTypes: ALL, doc: 'Read rows.' },
  { scope: 'db:insert', capability: 'write', allowedTypes: WRITERS, doc: 'Insert rows.' },
  { scope: 'db:update', capability: 'write', allowedTypes: WRITERS, doc: 'Update rows, run DDL-free writes.' },
  { scope: 'db:delete', capability: 'delete', allowedTypes: ADMIN, doc: 'Delete rows, drop objects.' },
  { scope: 'storage:read', capability: 'read', allowedTypes: ALL, doc: 'Read files, objects and memory entries.' },
  { scope: 'storage:write', capability: 'write', allowedTypes: WRITERS, doc: 'Create and change files, objects and memory entries.' },
  { scope: 'storage:delete', capability: 'delete', allowedTypes: ADMIN, doc: 'Delete files, objects and memory entries.' },
  { scope: 'realtime:subscribe', capability: 'read', allowedTypes: ALL, doc: 'Subscribe to realtime channels.' },
  { scope: 'graphql:query', capability: 'read', allowedTypes: ALL, doc: 'GraphQL queries.' },
  { scope: 'graphql:mutate', capability: 'write', allowedTypes: WRITERS, doc: 'GraphQL mutations.' },
  { scope: 'vcs:read', capability: 'read', allowedTypes: ALL, doc: 'Read repositories, issues and pull requests.' },
  { scope: 'vcs:write', capability: 'write', allowedTypes: WRITERS, doc: 'Push, open issues and pull requests.' },
  { scope: 'vcs:delete', capability: 'delete', allowedTypes: ADMIN, doc: 'Delete branches, repositories, releases.' },
  { scope: 'net:read', capability: 'read', allowedTypes: ALL, doc: 'Fetch web pages and call read-only HTTP APIs.' },
  { scope: 'exec:run', capability: 'write', allowedTypes: ADMIN, doc: 'Run commands (shell servers). Admin only.' },
  { scope: 'cloud:read', capability: 'read', allowedTypes: ALL, doc: 'Read cloud infrastructure state.' },
  { scope: 'cloud:write', capability: 'write', allowedTypes: ADMIN, doc: 'Change cloud infrastructure. Admin only.' },
  { scope: 'secrets:read', capability: 'read', allowedTypes: ADMIN, doc: 'Read secrets. Admin only.' },
  { scope: 'auth:*', capability: 'write', allowedTypes: ADMIN, doc: 'Manage users, roles and sessions. Admin only (seed 000 US-012).' },
];

export const SCOPE_BY_NAME: ReadonlyMap<string, ScopeSpec> = new Map(SCOPES.map((s) => [s.scope, s]));

export const DEFAULT_SCOPES: Record<TokenType, readonly string[]> = {
  ro: ['db:select', 'storage:read', 'realtime:subscribe'],
  rw: ['db:select', 'storage:read', 'realtime:subscribe', 'db:insert', 'db:update', 'storage:write'],
  admin: SCOPES.map((s) => s.scope),
};

/** Scopes of `requested` that a token of `type` may not hold (unknown scopes included). */
export function disallowedScopes(type: TokenType, requested: readonly string[]): string[] {
  return requested.filter((s) => !SCOPE_BY_NAME.get(s)?.allowedTypes.includes(type));
}

export const WRITE_RISK_WARNING = 'This AI can modify your data. Only grant to trusted systems.';
