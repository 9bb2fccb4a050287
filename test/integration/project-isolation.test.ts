import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { FastifyInstance, InjectOptions, LightMyRequestResponse } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bearer, TestContext } from '../helpers/context.js';
import { GatewayDriver } from '../helpers/gateway-client.js';

// A security review of project isolation across the whole admin API (docs/tokens.md, "Operator keys limited
// to projects"). The matrix below holds one decision per route of the app, read from the app's own route
// table: a route added later without a row here fails the first test. For every route it checks
// (a) a key limited to alpha against beta's data (ids in the path, body and query, and lists without a
// filter), (b) a viewer on every route that changes something, (c) an operator on owner-only routes.

const POLICY = `
version: 1
servers:
  filesystem:
    identity: { command: npx, args: ["-y", "@modelcontextprotocol/server-filesystem", "/tmp/ks-test"] }
    map: filesystem
    approval: [move_file]
  memory:
    identity: { command: npx, args: ["-y", "@modelcontextprotocol/server-memory"] }
    map: memory
roles:
  code_agent:
    allowed_servers: [filesystem, memory]
rate_limits:
  global: { max_calls_per_session: 1000, max_calls_per_minute: 1000 }
  per_token: { max_calls_per_minute: 1000, max_calls_per_day: 100000, max_open_sessions: 50, max_new_sessions_per_hour: 500 }
cascade: { threshold: 100, window_calls: 5 }
`;

type Role = 'viewer' | 'operator' | 'owner';
type Method = 'GET' | 'POST' | 'PUT' | 'DELETE';

/** What one project holds after seeding: one of everything a route can name. */
interface Seeded {
  project: string;
  rw: { raw: string; id: string };
  halted: { raw: string; id: string };
  spare: { raw: string; id: string };
  session: string;
  haltedSession: string;
  decision: string;
  approval: string;
  grant: string;
  kill: string;
  operatorKey: string;
  /** Filled after seeding: every id of this project an answer could carry (alerts, audit rows ...), with what it is. */
  fingerprints: Map<string, string>;
}

interface Fixtures {
  alpha: Seeded;
  beta: Seeded;
  /** A token of alpha the probes may spend (gateway probes call with it). */
  alphaProbe: { raw: string; id: string };
  /** A changed tool definition waiting for approval: it belongs to no project, so only keys without a limit decide it. */
  toolDefinition: string;
}

/**
 * What a probe expects: a status (and error code), the `shows` strings (alpha's rows), what `check` asserts,
 * and in every case none of beta's fingerprints. `echo` are beta ids the request itself sent, which the
 * answer may repeat.
 */
interface Expectation {
  status: 200 | 201 | 400 | 403 | 404;
  code?: string;
  shows?: string[];
  /** Not beta's, but not for this key either (a tool definition for a key limited to projects). */
  hides?: string[];
  echo?: string[];
  check?: (res: LightMyRequestResponse) => void;
}

interface Probe {
  what: string;
  method: Method;
  url: string;
  payload?: Record<string, unknown>;
  /** Who calls: the owner key limited to alpha (default), or a gateway with alpha's agent token. */
  as?: 'limited' | 'alphaAgent';
  expect: Expectation;
}

type Entry =
  /** No credential (health, the UI's static files, the OpenAPI document): nothing of a project in it. */
  | { auth: 'none' }
  /** Gateway key + agent token: operator keys are refused (401); a token reaches only its own sessions and decisions. */
  | { auth: 'gateway'; probes: (f: Fixtures) => Probe[] }
  /** The Unleash webhook's own secret. */
  | { auth: 'webhook' }
  /** Acts on or reads every project at once: a key limited to projects gets 403 FORBIDDEN. */
  | { auth: 'operator'; role: Role; reach: 'every-project' }
  /** Installation settings with no project's data in them (policy, flags, scopes ...): any key reads them. */
  | { auth: 'operator'; role: Role; reach: 'installation' }
  /** Project data: a key limited to alpha neither reads nor changes beta's. */
  | { auth: 'operator'; role: Role; reach: 'project'; probes: (f: Fixtures) => Probe[] };

const R = 'probe by a key limited to alpha';
const SINCE = new Date(Date.now() - 3_600_000).toISOString();

const MATRIX: Record<string, Entry> = {
  // ---- no credential ----
  'GET /': { auth: 'none' },
  'GET /ui': { auth: 'none' },
  'GET /ui/*': { auth: 'none' },
  'GET /docs/openapi.json': { auth: 'none' },
  'GET /healthz': { auth: 'none' },
  'GET /readyz': { auth: 'none' },
  'POST /v1/flags/events': { auth: 'webhook' },

  // ---- gateway routes ----
  'POST /v1/sessions': { auth: 'gateway', probes: () => [] },
  'POST /v1/gateway/tools': { auth: 'gateway', probes: () => [] },
  'POST /v1/decisions': {
    auth: 'gateway',
    probes: (f) => [
      {
        what: "a call in beta's session with alpha's token",
        method: 'POST',
        url: '/v1/decisions',
        as: 'alphaAgent',
        payload: { server: 'filesystem', tool: 'read_file', arguments: { path: 'a.md' }, session_id: f.beta.haltedSession },
        expect: { status: 200, echo: [f.beta.haltedSession], check: (res) => expect(res.json()).toMatchObject({ decision: 'deny' }) },
      },
    ],
  },
  'POST /v1/decisions/{id}/result': {
    auth: 'gateway',
    probes: (f) => [
      { what: "the result of beta's decision", method: 'POST', url: `/v1/decisions/${f.beta.decision}/result`, as: 'alphaAgent', payload: { status: 'success', duration_ms: 1, result_bytes: 1 }, expect: { status: 404, echo: [f.beta.decision] } },
    ],
  },
  'GET /v1/gateway/approvals/{id}': {
    auth: 'gateway',
    probes: (f) => [{ what: "beta's approval", method: 'GET', url: `/v1/gateway/approvals/${f.beta.approval}`, as: 'alphaAgent', expect: { status: 404, echo: [f.beta.approval] } }],
  },

  // ---- every project at once: refused to limited keys ----
  'POST /v1/gateway-keys': { auth: 'operator', role: 'operator', reach: 'every-project' },
  'POST /v1/gateway-keys/{id}/revoke': { auth: 'operator', role: 'operator', reach: 'every-project' },
  'GET /v1/tools': { auth: 'operator', role: 'viewer', reach: 'every-project' },
  'POST /v1/tools/{id}/approve': { auth: 'operator', role: 'operator', reach: 'every-project' },
  'POST /v1/tools/{id}/reject': { auth: 'operator', role: 'operator', reach: 'every-project' },
  'PUT /v1/admin/log-level': { auth: 'operator', role: 'owner', reach: 'every-project' },
  'GET /v1/audit/verify': { auth: 'operator', role: 'owner', reach: 'every-project' },
  'GET /metrics': { auth: 'operator', role: 'viewer', reach: 'every-project' },

  // ---- installation settings: no project's data ----
  'GET /v1/scopes': { auth: 'operator', role: 'viewer', reach: 'installation' },
  // Names and prefixes of gateways, which serve every project (docs/guide/getting-started.md).
  'GET /v1/gateway-keys': { auth: 'operator', role: 'viewer', reach: 'installation' },
  // Constraint values naming another project's token, session or project are withheld from limited keys:
  // flags-step.unleash-lane.ts checks it (it needs flags changed in an Unleash of its own).
  'GET /v1/flags': { auth: 'operator', role: 'viewer', reach: 'installation' },
  'GET /v1/ui/settings': { auth: 'operator', role: 'viewer', reach: 'installation' },
  'GET /v1/policy': { auth: 'operator', role: 'viewer', reach: 'installation' },
  'GET /v1/policy/replicas': { auth: 'operator', role: 'viewer', reach: 'installation' },
  'GET /v1/admin/log-level': { auth: 'operator', role: 'viewer', reach: 'installation' },
  // The asking key itself (name, role, its own projects): nothing of another project.
  'GET /v1/operator-keys/me': { auth: 'operator', role: 'viewer', reach: 'installation' },

  // ---- agent tokens ----
  'GET /v1/keys': {
    auth: 'operator',
    role: 'viewer',
    reach: 'project',
    probes: (f) => [
      { what: 'list, no filter', method: 'GET', url: '/v1/keys?limit=500', expect: { status: 200, shows: [f.alpha.rw.id, f.alpha.halted.id] } },
      { what: 'list, project=beta', method: 'GET', url: '/v1/keys?project=beta', expect: { status: 200, check: (res) => expect(res.json().keys).toEqual([]) } },
      { what: 'list, type ro', method: 'GET', url: '/v1/keys?type=ro', expect: { status: 200, shows: [f.alpha.halted.id] } },
    ],
  },
  'POST /v1/keys': {
    auth: 'operator',
    role: 'operator',
    reach: 'project',
    probes: () => [{ what: 'a token in beta', method: 'POST', url: '/v1/keys', payload: { type: 'ro', role: 'code_agent', project_id: 'beta', environment: 'development' }, expect: { status: 403, code: 'FORBIDDEN' } }],
  },
  'GET /v1/keys/{id}': { auth: 'operator', role: 'viewer', reach: 'project', probes: (f) => [{ what: "beta's token", method: 'GET', url: `/v1/keys/${f.beta.rw.id}`, expect: { status: 404 } }] },
  'POST /v1/keys/{id}/revoke': {
    auth: 'operator',
    role: 'operator',
    reach: 'project',
    probes: (f) => [{ what: "beta's token", method: 'POST', url: `/v1/keys/${f.beta.rw.id}/revoke`, payload: { reason: R }, expect: { status: 404 } }],
  },
  'POST /v1/keys/{id}/rotate': {
    auth: 'operator',
    role: 'operator',
    reach: 'project',
    probes: (f) => [{ what: "beta's token", method: 'POST', url: `/v1/keys/${f.beta.rw.id}/rotate`, payload: { grace_seconds: 0, reason: R }, expect: { status: 404 } }],
  },
  'POST /v1/keys/{id}/resume': {
    auth: 'operator',
    role: 'operator',
    reach: 'project',
    probes: (f) => [{ what: "beta's halted token", method: 'POST', url: `/v1/keys/${f.beta.halted.id}/resume`, payload: { reason: R }, expect: { status: 404 } }],
  },
  'POST /v1/keys/bulk-revoke': {
    auth: 'operator',
    role: 'operator',
    reach: 'project',
    probes: (f) => [
      // Naming a project the key cannot reach is refused, as creating a token or killing a project there is:
      // "0 tokens match" would read as "beta has none" during an incident.
      { what: 'dry run, project_id beta', method: 'POST', url: '/v1/keys/bulk-revoke', payload: { dry_run: true, project_id: 'beta' }, expect: { status: 403, code: 'FORBIDDEN' } },
      { what: 'revoke, project_id beta', method: 'POST', url: '/v1/keys/bulk-revoke', payload: { dry_run: false, project_id: 'beta', reason: R, expected_count: 0 }, expect: { status: 403, code: 'FORBIDDEN' } },
      // Without a project filter: alpha's tokens only.
      { what: 'dry run, type ro', method: 'POST', url: '/v1/keys/bulk-revoke', payload: { dry_run: true, type: 'ro' }, expect: { status: 200, shows: [f.alpha.halted.id] } },
    ],
  },

  // ---- operator keys (owners) ----
  'GET /v1/operator-keys': { auth: 'operator', role: 'owner', reach: 'project', probes: (f) => [{ what: 'list', method: 'GET', url: '/v1/operator-keys', expect: { status: 200, shows: [f.alpha.operatorKey] } }] },
  'POST /v1/operator-keys': {
    auth: 'operator',
    role: 'owner',
    reach: 'project',
    probes: () => [
      { what: 'a key limited to beta', method: 'POST', url: '/v1/operator-keys', payload: { name: 'rv beta', role: 'viewer', projects: ['beta'] }, expect: { status: 403, code: 'FORBIDDEN' } },
      { what: 'a key without a project limit', method: 'POST', url: '/v1/operator-keys', payload: { name: 'rv all', role: 'viewer' }, expect: { status: 403, code: 'FORBIDDEN' } },
    ],
  },
  'POST /v1/operator-keys/{id}/revoke': {
    auth: 'operator',
    role: 'owner',
    reach: 'project',
    probes: (f) => [{ what: "beta's operator key", method: 'POST', url: `/v1/operator-keys/${f.beta.operatorKey}/revoke`, payload: { reason: R }, expect: { status: 404 } }],
  },

  // ---- sessions ----
  'GET /v1/sessions': {
    auth: 'operator',
    role: 'viewer',
    reach: 'project',
    probes: (f) => [
      { what: 'list', method: 'GET', url: '/v1/sessions?limit=500', expect: { status: 200, shows: [f.alpha.session, f.alpha.haltedSession] } },
      { what: 'list, state=halted', method: 'GET', url: '/v1/sessions?state=halted&limit=500', expect: { status: 200, shows: [f.alpha.haltedSession] } },
      { what: "list, beta's token", method: 'GET', url: `/v1/sessions?token=${f.beta.rw.id}`, expect: { status: 200, echo: [f.beta.rw.id], check: (res) => expect(res.json().sessions).toEqual([]) } },
    ],
  },
  'GET /v1/sessions/{id}': { auth: 'operator', role: 'viewer', reach: 'project', probes: (f) => [{ what: "beta's session", method: 'GET', url: `/v1/sessions/${f.beta.session}`, expect: { status: 404 } }] },
  'POST /v1/sessions/{id}/resume': {
    auth: 'operator',
    role: 'operator',
    reach: 'project',
    probes: (f) => [{ what: "beta's halted session", method: 'POST', url: `/v1/sessions/${f.beta.haltedSession}/resume`, payload: { reason: R }, expect: { status: 404 } }],
  },
  // Gateways close their own sessions too (gateway key + agent token); operators close any they can see.
  'POST /v1/sessions/{id}/close': {
    auth: 'operator',
    role: 'operator',
    reach: 'project',
    probes: (f) => [
      { what: "beta's session", method: 'POST', url: `/v1/sessions/${f.beta.session}/close`, payload: { reason: R }, expect: { status: 404 } },
      { what: "beta's session, by a gateway with alpha's token", method: 'POST', url: `/v1/sessions/${f.beta.session}/close`, as: 'alphaAgent', payload: {}, expect: { status: 404 } },
    ],
  },

  // ---- explain ----
  'POST /v1/decisions/explain': {
    auth: 'operator',
    role: 'viewer',
    reach: 'project',
    probes: (f) => [
      { what: "beta's token", method: 'POST', url: '/v1/decisions/explain', payload: { token_id: f.beta.rw.id, server: 'filesystem', tool: 'read_file' }, expect: { status: 404 } },
      {
        what: "alpha's token in beta's halted session",
        method: 'POST',
        url: '/v1/decisions/explain',
        payload: { token_id: f.alpha.rw.id, server: 'filesystem', tool: 'read_file', session_id: f.beta.haltedSession },
        // What a real call would get: the session is not this token's (nothing about its halt).
        expect: { status: 200, echo: [f.beta.haltedSession], check: (res) => expect(res.json()).toMatchObject({ decision: 'deny', code: 'SESSION_UNKNOWN' }) },
      },
    ],
  },

  // ---- grants ----
  'GET /v1/grants': {
    auth: 'operator',
    role: 'viewer',
    reach: 'project',
    probes: (f) => [
      { what: 'list', method: 'GET', url: '/v1/grants', expect: { status: 200, shows: [f.alpha.grant] } },
      { what: "list, beta's token", method: 'GET', url: `/v1/grants?token=${f.beta.rw.id}`, expect: { status: 200, echo: [f.beta.rw.id], check: (res) => expect(res.json().grants).toEqual([]) } },
    ],
  },
  'POST /v1/grants': {
    auth: 'operator',
    role: 'operator',
    reach: 'project',
    probes: (f) => [
      { what: "beta's token", method: 'POST', url: '/v1/grants', payload: { token_id: f.beta.rw.id, reason: R, expires_in: 600 }, expect: { status: 404 } },
      { what: "alpha's token, beta's session", method: 'POST', url: '/v1/grants', payload: { token_id: f.alpha.rw.id, session_id: f.beta.session, reason: R, expires_in: 600 }, expect: { status: 400, code: 'INVALID_REQUEST', echo: [f.beta.session] } },
    ],
  },
  'DELETE /v1/grants/{id}': { auth: 'operator', role: 'operator', reach: 'project', probes: (f) => [{ what: "beta's grant", method: 'DELETE', url: `/v1/grants/${f.beta.grant}`, payload: { reason: R }, expect: { status: 404 } }] },

  // ---- approvals ----
  'GET /v1/approvals': { auth: 'operator', role: 'viewer', reach: 'project', probes: (f) => [
      { what: 'list', method: 'GET', url: '/v1/approvals?limit=500', expect: { status: 200, shows: [f.alpha.approval], hides: [f.toolDefinition] } },
      { what: 'list, state=pending', method: 'GET', url: '/v1/approvals?state=pending', expect: { status: 200, shows: [f.alpha.approval] } },
      { what: "list, beta's token", method: 'GET', url: `/v1/approvals?token=${f.beta.rw.id}`, expect: { status: 200, echo: [f.beta.rw.id], check: (res) => expect(res.json().approvals).toEqual([]) } },
    ],
  },
  'GET /v1/approvals/{id}': { auth: 'operator', role: 'viewer', reach: 'project', probes: (f) => [
      { what: "beta's approval", method: 'GET', url: `/v1/approvals/${f.beta.approval}`, expect: { status: 404 } },
      { what: 'a tool definition', method: 'GET', url: `/v1/approvals/${f.toolDefinition}`, expect: { status: 404 } },
    ],
  },
  'POST /v1/approvals/{id}/approve': {
    auth: 'operator',
    role: 'operator',
    reach: 'project',
    probes: (f) => [
      { what: "beta's approval", method: 'POST', url: `/v1/approvals/${f.beta.approval}/approve`, payload: { reason: R }, expect: { status: 404 } },
      { what: 'a tool definition', method: 'POST', url: `/v1/approvals/${f.toolDefinition}/approve`, payload: { reason: R }, expect: { status: 404 } },
    ],
  },
  'POST /v1/approvals/{id}/reject': {
    auth: 'operator',
    role: 'operator',
    reach: 'project',
    probes: (f) => [
      { what: "beta's approval", method: 'POST', url: `/v1/approvals/${f.beta.approval}/reject`, payload: { reason: R }, expect: { status: 404 } },
      { what: 'a tool definition', method: 'POST', url: `/v1/approvals/${f.toolDefinition}/reject`, payload: { reason: R }, expect: { status: 404 } },
    ],
  },

  // ---- kills ----
  'GET /v1/kills': { auth: 'operator', role: 'viewer', reach: 'project', probes: (f) => [
      { what: 'list, all', method: 'GET', url: '/v1/kills?state=all', expect: { status: 200, shows: [f.alpha.kill] } },
      { what: 'list, in force', method: 'GET', url: '/v1/kills', expect: { status: 200, shows: [f.alpha.kill] } },
    ],
  },
  'GET /v1/kills/{id}': { auth: 'operator', role: 'viewer', reach: 'project', probes: (f) => [{ what: "beta's kill", method: 'GET', url: `/v1/kills/${f.beta.kill}`, expect: { status: 404 } }] },
  'POST /v1/kills': {
    auth: 'operator',
    role: 'operator',
    reach: 'project',
    probes: (f) => [
      { what: 'project beta', method: 'POST', url: '/v1/kills', payload: { target: 'project', project_id: 'beta', reason: R }, expect: { status: 403, code: 'FORBIDDEN' } },
      { what: "beta's token", method: 'POST', url: '/v1/kills', payload: { target: 'token', token_id: f.beta.rw.id, reason: R }, expect: { status: 404 } },
      { what: "beta's session", method: 'POST', url: '/v1/kills', payload: { target: 'session', session_id: f.beta.session, reason: R }, expect: { status: 404 } },
      { what: 'everything', method: 'POST', url: '/v1/kills', payload: { target: 'everything', reason: R }, expect: { status: 403, code: 'FORBIDDEN' } },
    ],
  },
  'DELETE /v1/kills/{id}': { auth: 'operator', role: 'operator', reach: 'project', probes: (f) => [{ what: "beta's kill", method: 'DELETE', url: `/v1/kills/${f.beta.kill}`, payload: { reason: R }, expect: { status: 404 } }] },

  // ---- audit, usage, incidents ----
  'GET /v1/audit': {
    auth: 'operator',
    role: 'viewer',
    reach: 'project',
    probes: (f) => [
      { what: 'list', method: 'GET', url: '/v1/audit?limit=1000', expect: { status: 200, shows: [f.alpha.decision, f.alpha.rw.id] } },
      { what: 'list, project=beta', method: 'GET', url: '/v1/audit?project=beta', expect: { status: 200, check: (res) => expect(res.json().events).toEqual([]) } },
      { what: "list, beta's token", method: 'GET', url: `/v1/audit?token=${f.beta.rw.id}`, expect: { status: 200, echo: [f.beta.rw.id], check: (res) => expect(res.json().events).toEqual([]) } },
      { what: "list, beta's session", method: 'GET', url: `/v1/audit?session=${f.beta.session}`, expect: { status: 200, echo: [f.beta.session], check: (res) => expect(res.json().events).toEqual([]) } },
      { what: "list, beta's decision", method: 'GET', url: `/v1/audit?decision_id=${f.beta.decision}`, expect: { status: 200, echo: [f.beta.decision], check: (res) => expect(res.json().events).toEqual([]) } },
      { what: "list, beta's token as actor", method: 'GET', url: `/v1/audit?actor=${f.beta.rw.id}`, expect: { status: 200, echo: [f.beta.rw.id], check: (res) => expect(res.json().events).toEqual([]) } },
      { what: 'list, denials', method: 'GET', url: '/v1/audit?decision=deny&limit=1000', expect: { status: 200, shows: [f.alpha.halted.id] } },
    ],
  },
  'GET /v1/audit/export': {
    auth: 'operator',
    role: 'viewer',
    reach: 'project',
    probes: (f) => [
      { what: 'CSV', method: 'GET', url: '/v1/audit/export?format=csv', expect: { status: 200, shows: [f.alpha.decision] } },
      { what: 'JSON Lines', method: 'GET', url: '/v1/audit/export?format=jsonl', expect: { status: 200, shows: [f.alpha.decision] } },
      { what: 'JSON Lines, project=beta', method: 'GET', url: '/v1/audit/export?format=jsonl&project=beta', expect: { status: 200, check: (res) => expect(res.body.trim()).toBe('') } },
    ],
  },
  'GET /v1/usage': {
    auth: 'operator',
    role: 'viewer',
    reach: 'project',
    probes: (f) => [
      { what: 'JSON', method: 'GET', url: '/v1/usage', expect: { status: 200, shows: [f.alpha.rw.id] } },
      { what: 'CSV', method: 'GET', url: '/v1/usage?format=csv', expect: { status: 200, shows: [f.alpha.rw.id] } },
      { what: 'project=beta', method: 'GET', url: '/v1/usage?project=beta', expect: { status: 200, check: (res) => expect(res.json().tokens).toEqual([]) } },
      { what: "beta's token", method: 'GET', url: `/v1/usage?token=${f.beta.rw.id}`, expect: { status: 200, echo: [f.beta.rw.id], check: (res) => expect(res.json().tokens).toEqual([]) } },
    ],
  },
  'GET /v1/usage/monthly': {
    auth: 'operator',
    role: 'viewer',
    reach: 'project',
    probes: (f) => [
      { what: 'JSON', method: 'GET', url: '/v1/usage/monthly', expect: { status: 200, shows: [f.alpha.rw.id] } },
      { what: 'CSV', method: 'GET', url: '/v1/usage/monthly?format=csv', expect: { status: 200, shows: [f.alpha.rw.id] } },
      { what: 'project=beta', method: 'GET', url: '/v1/usage/monthly?project=beta', expect: { status: 200, check: (res) => expect(res.json().months).toEqual([]) } },
    ],
  },
  'GET /v1/incidents/timeline': {
    auth: 'operator',
    role: 'viewer',
    reach: 'project',
    probes: (f) => [
      { what: 'JSON', method: 'GET', url: `/v1/incidents/timeline?from=${SINCE}`, expect: { status: 200, shows: [f.alpha.decision, f.alpha.kill] } },
      { what: 'JSON Lines', method: 'GET', url: `/v1/incidents/timeline?from=${SINCE}&format=jsonl`, expect: { status: 200, shows: [f.alpha.decision] } },
      { what: 'CSV', method: 'GET', url: `/v1/incidents/timeline?from=${SINCE}&format=csv`, expect: { status: 200, shows: [f.alpha.decision] } },
      // A project target outside the key's projects is 404, as one nothing names (a typo): the same answer.
      { what: 'project beta', method: 'GET', url: `/v1/incidents/timeline?from=${SINCE}&target=project:beta`, expect: { status: 404 } },
      { what: 'server filesystem', method: 'GET', url: `/v1/incidents/timeline?from=${SINCE}&target=server:filesystem`, expect: { status: 200, shows: [f.alpha.decision] } },
      { what: 'environment development', method: 'GET', url: `/v1/incidents/timeline?from=${SINCE}&target=environment:development`, expect: { status: 200, shows: [f.alpha.decision] } },
      { what: 'denials', method: 'GET', url: `/v1/incidents/timeline?from=${SINCE}&decisions=denials`, expect: { status: 200, shows: [f.alpha.halted.id] } },
      { what: "beta's token", method: 'GET', url: `/v1/incidents/timeline?from=${SINCE}&target=token:${f.beta.rw.id}`, expect: { status: 404 } },
      { what: "beta's session", method: 'GET', url: `/v1/incidents/timeline?from=${SINCE}&target=session:${f.beta.session}`, expect: { status: 404 } },
    ],
  },

  // ---- alerts ----
  'GET /v1/alerts': {
    auth: 'operator',
    role: 'viewer',
    reach: 'project',
    probes: (f) => [
      { what: 'list', method: 'GET', url: '/v1/alerts?limit=500', expect: { status: 200, shows: [f.alpha.halted.id, f.alpha.kill] } },
      { what: 'list, project=beta', method: 'GET', url: '/v1/alerts?project=beta', expect: { status: 200, check: (res) => expect(res.json().alerts).toEqual([]) } },
      { what: "list, beta's token", method: 'GET', url: `/v1/alerts?token=${f.beta.halted.id}`, expect: { status: 200, echo: [f.beta.halted.id], check: (res) => expect(res.json().alerts).toEqual([]) } },
      { what: "list, beta's session", method: 'GET', url: `/v1/alerts?session=${f.beta.haltedSession}`, expect: { status: 200, echo: [f.beta.haltedSession], check: (res) => expect(res.json().alerts).toEqual([]) } },
      { what: 'list, open', method: 'GET', url: '/v1/alerts?acknowledged=false', expect: { status: 200, shows: [f.alpha.halted.id] } },
    ],
  },
  // Checked on a real connection (replay and live events): see the SSE test below.
  'GET /v1/alerts/stream': { auth: 'operator', role: 'viewer', reach: 'project', probes: () => [] },
  'GET /v1/alerts/{id}': { auth: 'operator', role: 'viewer', reach: 'project', probes: (f) => betaAlerts(f).map((id): Probe => ({ what: `beta's alert ${id}`, method: 'GET', url: `/v1/alerts/${id}`, expect: { status: 404 } })) },
  'POST /v1/alerts/{id}/ack': {
    auth: 'operator',
    role: 'operator',
    reach: 'project',
    probes: (f) => betaAlerts(f).map((id): Probe => ({ what: `beta's alert ${id}`, method: 'POST', url: `/v1/alerts/${id}/ack`, payload: { note: R }, expect: { status: 404 } })),
  },
  'POST /v1/alerts/ack': {
    auth: 'operator',
    role: 'operator',
    reach: 'project',
    probes: (f) => [
      { what: 'project_id beta', method: 'POST', url: '/v1/alerts/ack', payload: { project_id: 'beta', note: R }, expect: { status: 403, code: 'FORBIDDEN' } },
      { what: 'all', method: 'POST', url: '/v1/alerts/ack', payload: { all: true, note: R }, expect: { status: 200, shows: [alphaAlerts(f)[0]!] } },
    ],
  },
};

// Alert ids, filled in by the seeding (owner's view of each project's alerts).
const alertIds: Record<'alpha' | 'beta', string[]> = { alpha: [], beta: [] };
const betaAlerts = (_f: Fixtures) => alertIds.beta;
const alphaAlerts = (_f: Fixtures) => alertIds.alpha;

/** GET /v1/keys/:id → GET /v1/keys/{id}, as the OpenAPI document writes it. */
const openApiPath = (url: string) => url.replace(/:([a-z_]+)/gi, '{$1}');

/**
 * Every route of the app, from Fastify's own route table (printRoutes), so a route hidden from the OpenAPI
 * document is listed too. HEAD routes are the GET routes' twins.
 */
function fastifyRoutes(app: FastifyInstance): string[] {
  const out: string[] = [];
  const stack: string[] = [];
  for (const line of app.printRoutes({ commonPrefix: false }).split('\n')) {
    const m = /^((?:│ {3}| {4})*)[├└]── (\S+)(?: \(([A-Z, ]+)\))?\s*$/.exec(line);
    if (!m) continue;
    const depth = m[1]!.length / 4;
    const parent = stack[depth - 1] ?? '';
    const segment = m[2]!;
    const path = parent === '' ? segment : parent.endsWith('/') || segment.startsWith('/') ? parent + segment : `${parent}/${segment}`;
    stack[depth] = path;
    stack.length = depth + 1;
    for (const method of m[3]?.split(', ') ?? []) if (method !== 'HEAD') out.push(`${method} ${openApiPath(path)}`);
  }
  return out.sort();
}

const t = new TestContext();
let app: FastifyInstance;
let gw: GatewayDriver;
let base: string;
const keys = {} as Record<'viewer' | 'operator' | 'owner' | 'limitedViewer' | 'limitedOperator' | 'limitedOwner', string>;
let f: Fixtures;

async function inject(opts: InjectOptions): Promise<LightMyRequestResponse> {
  return app.inject(opts);
}

async function ok(opts: InjectOptions, status = 201): Promise<Record<string, unknown>> {
  const res = await inject(opts);
  expect(res.statusCode, `${opts.method} ${opts.url}: ${res.body}`).toBe(status);
  return res.json();
}

async function seed(project: 'alpha' | 'beta'): Promise<Seeded> {
  const owner = bearer(gw.owner);
  const rw = await gw.token('rw', { project });
  const halted = await gw.token('ro', { project });
  const spare = await gw.token('ro', { project });
  const session = (await gw.session(rw.raw)).session_id;
  const allowed = await gw.decide(rw.raw, { server: 'filesystem', tool: 'read_file', arguments: { path: 'a.md' }, session_id: session });
  expect(allowed, JSON.stringify(allowed)).toMatchObject({ decision: 'allow' });
  expect((await gw.result(rw.raw, allowed.decision_id, { status: 'success', duration_ms: 3, result_bytes: 10 })).statusCode).toBe(200);
  const approval = await gw.decide(rw.raw, { server: 'filesystem', tool: 'move_file', arguments: { source: 'a.md', destination: 'b.md' }, session_id: session });
  expect(approval.code).toBe('APPROVAL_REQUIRED');
  const haltedSession = (await gw.session(halted.raw)).session_id;
  const halt = await gw.decide(halted.raw, { server: 'nosuch', tool: 'x', session_id: haltedSession });
  expect(halt.code).toBe('UNKNOWN_SERVER');
  const grant = await ok({ method: 'POST', url: '/v1/grants', headers: owner, payload: { token_id: rw.id, reason: `grant of ${project}`, expires_in: 600 } });
  const kill = await ok({ method: 'POST', url: '/v1/kills', headers: owner, payload: { target: 'token', token_id: spare.id, reason: `kill of ${project}` } });
  const opKey = await app.ctx.credentials.createOperatorKey('test', { name: `${project} viewer`, role: 'viewer', projects: [project] });
  return {
    project,
    rw,
    halted,
    spare,
    session,
    haltedSession,
    decision: allowed.decision_id,
    approval: approval.approval_id,
    grant: grant['id'] as string,
    kill: (kill['kill'] as { id: string }).id,
    operatorKey: opKey.operator_key.id,
    fingerprints: new Map(),
  };
}

/** Every id of a project that an answer could carry, read with the owner's unlimited key. */
async function fingerprintsOf(s: Seeded): Promise<void> {
  const owner = bearer(gw.owner);
  const add = (v: unknown, what: string) => {
    if (typeof v === 'string' && v.length >= 8 && !s.fingerprints.has(v)) s.fingerprints.set(v, what);
  };
  const named = { rw: s.rw.id, halted: s.halted.id, spare: s.spare.id, session: s.session, haltedSession: s.haltedSession, decision: s.decision, approval: s.approval, grant: s.grant, kill: s.kill, operatorKey: s.operatorKey };
  for (const [what, v] of Object.entries(named)) add(v, what);
  for (const k of ((await ok({ method: 'GET', url: `/v1/keys?project=${s.project}&limit=500`, headers: owner }, 200))['keys'] as { id: string; display_prefix: string }[])) {
    add(k.id, 'token');
    add(k.display_prefix, 'token display prefix');
  }
  const alerts = (await ok({ method: 'GET', url: `/v1/alerts?project=${s.project}&limit=500`, headers: owner }, 200))['alerts'] as { id: string }[];
  alertIds[s.project as 'alpha' | 'beta'] = alerts.map((a) => a.id);
  for (const a of alerts) add(a.id, 'alert');
  const events = (await ok({ method: 'GET', url: `/v1/audit?project=${s.project}&limit=1000`, headers: owner }, 200))['events'] as { id: string; decision_id: string | null; session_id: string | null }[];
  for (const e of events) {
    add(e.id, 'audit row');
    add(e.decision_id, 'decision');
    add(e.session_id, 'session');
  }
  // Project names are short words found in messages ("limited to projects alpha"): the rows' own field is what leaks.
  add(`"project_id":"${s.project}"`, 'project field');
}

/** The fingerprints of beta found in a text (leaving out what the request sent), each with what it is. */
function betaIn(text: string, echo: readonly string[] = []): string[] {
  return [...f.beta.fingerprints].filter(([fp]) => !echo.includes(fp) && text.includes(fp)).map(([fp, what]) => `${what} ${fp}`);
}

beforeAll(async () => {
  await t.setup();
  mkdirSync(t.dataDir, { recursive: true });
  const policyFile = join(t.dataDir, 'policy.yaml');
  writeFileSync(policyFile, POLICY);
  app = await t.app({ policyFile });
  await app.listen({ host: '127.0.0.1', port: 0 });
  const address = app.server.address();
  base = typeof address === 'object' && address ? `http://127.0.0.1:${address.port}` : '';
  gw = await new GatewayDriver(t, app).init();
  keys.owner = gw.owner;
  keys.viewer = await t.operatorKey(app, 'viewer');
  keys.operator = await t.operatorKey(app, 'operator');
  keys.limitedViewer = await t.operatorKey(app, 'viewer', ['alpha']);
  keys.limitedOperator = await t.operatorKey(app, 'operator', ['alpha']);
  keys.limitedOwner = await t.operatorKey(app, 'owner', ['alpha']);
  const alpha = await seed('alpha');
  const beta = await seed('beta');
  const alphaProbe = await gw.token('rw', { project: 'alpha' });
  const memory = (description: string) => ({ name: 'memory', identity: { command: 'npx', args: ['-y', '@modelcontextprotocol/server-memory'] }, tools: [{ name: 'read_graph', description }] });
  for (const description of ['Read the knowledge graph', 'Read the knowledge graph, changed']) {
    const res = await inject({ method: 'POST', url: '/v1/gateway/tools', headers: gw.headers(alphaProbe.raw), payload: { servers: [memory(description)] } });
    expect(res.statusCode, res.body).toBe(200);
  }
  const definitions = (await ok({ method: 'GET', url: '/v1/tools?server=memory', headers: bearer(gw.owner) }, 200))['tools'] as { id: string; status: string }[];
  const toolDefinition = definitions.find((d) => d.status === 'pending')!.id;
  f = { alpha, beta, alphaProbe, toolDefinition };
  await fingerprintsOf(alpha);
  await fingerprintsOf(beta);
  expect(alertIds.beta.length).toBeGreaterThanOrEqual(3);
}, 60_000);
afterAll(() => t.teardown());

describe('the matrix covers the app', () => {
  it('every route of the app has a row in the matrix, and every row is a route of the app', async () => {
    const routes = fastifyRoutes(app);
    expect(routes.length).toBeGreaterThan(50);
    const spec = (await inject({ url: '/docs/openapi.json' })).json() as { paths: Record<string, Record<string, unknown>> };
    const documented = Object.entries(spec.paths).flatMap(([p, item]) => Object.keys(item).map((m) => `${m.toUpperCase()} ${p}`));
    // The OpenAPI document lists a subset of the route table (hidden routes aside): the table is the source.
    expect(documented.filter((d) => !routes.includes(d))).toEqual([]);
    expect(routes.filter((r) => !(r in MATRIX)), 'routes without a decision in MATRIX').toEqual([]);
    expect(Object.keys(MATRIX).filter((k) => !routes.includes(k)), 'MATRIX rows that are not routes').toEqual([]);
  });

  it('no route that changes something is open to viewers (explain is a dry run: it changes nothing)', () => {
    const readPosts = ['POST /v1/decisions/explain'];
    const open = Object.entries(MATRIX).filter(([k, e]) => e.auth === 'operator' && e.role === 'viewer' && !k.startsWith('GET ') && !readPosts.includes(k));
    expect(open.map(([k]) => k)).toEqual([]);
  });

  it('every project-data route has probes of beta, and every probe expects something', () => {
    const bare = Object.entries(MATRIX).filter(([k, e]) => e.auth === 'operator' && e.reach === 'project' && e.probes(f).length === 0 && k !== 'GET /v1/alerts/stream');
    expect(bare.map(([k]) => k)).toEqual([]);
  });
});

/** The path of a matrix row with a fresh id in place of {id}, and a body that cannot change anything. */
function blank(key: string): { method: Method; url: string; payload?: Record<string, unknown> } {
  const [method, path] = key.split(' ') as [Method, string];
  const url = path.replace('{id}', '0192f0c1-0000-7000-8000-00000000dead');
  return method === 'GET' ? { method, url } : { method, url, payload: {} };
}

/** Status of a request; the SSE stream is opened on the real port and closed as soon as its headers came. */
async function statusOf(key: string, credential: string, extra: Record<string, string> = {}): Promise<{ status: number; code?: string; message?: string }> {
  const req = blank(key);
  if (key === 'GET /v1/alerts/stream') {
    const controller = new AbortController();
    const res = await fetch(`${base}${req.url}`, { headers: { ...bearer(credential), ...extra }, signal: controller.signal });
    const body = res.status === 200 ? undefined : ((await res.json()) as { error: { code: string; message: string } });
    controller.abort();
    return { status: res.status, ...(body ? { code: body.error.code, message: body.error.message } : {}) };
  }
  const res = await inject({ ...req, headers: { ...bearer(credential), ...extra } });
  const err = res.statusCode >= 400 ? (res.json() as { error?: { code: string; message: string } }).error : undefined;
  return { status: res.statusCode, ...(err ? { code: err.code, message: err.message } : {}) };
}

const operatorRows = () => Object.entries(MATRIX).filter((r): r is [string, Extract<Entry, { auth: 'operator' }>] => r[1].auth === 'operator');
const RANK: Record<Role, number> = { viewer: 1, operator: 2, owner: 3 };

describe('roles: viewer reads, operator acts, owner manages keys', () => {
  it('a key below the route role gets 403 FORBIDDEN naming the role; the role itself gets past the check', async () => {
    const wrong: string[] = [];
    for (const [key, e] of operatorRows()) {
      for (const role of ['viewer', 'operator'] as const) {
        if (RANK[role] >= RANK[e.role]) continue;
        for (const credential of role === 'viewer' ? [keys.viewer, keys.limitedViewer] : [keys.operator, keys.limitedOperator]) {
          const r = await statusOf(key, credential);
          if (r.status !== 403 || r.code !== 'FORBIDDEN' || !r.message?.includes(`needs the ${e.role} role`)) wrong.push(`${key} as ${role}: ${r.status} ${r.code} ${r.message}`);
        }
      }
      const allowed = await statusOf(key, keys[e.role]);
      if (allowed.status === 401 || allowed.status === 403) wrong.push(`${key} as ${e.role} (its role): ${allowed.status} ${allowed.message}`);
    }
    expect(wrong).toEqual([]);
  });

  it('agent tokens and gateway keys are refused on every operator route (403 MCP_TOKEN_FORBIDDEN)', async () => {
    const wrong: string[] = [];
    for (const [key] of operatorRows()) {
      for (const credential of [gw.gatewayKey, f.alphaProbe.raw]) {
        const r = await statusOf(key, credential);
        // The close route is also a gateway route: either credential alone is a gateway request without its pair (401).
        if (key === 'POST /v1/sessions/{id}/close') {
          if (r.status !== 401) wrong.push(`${key} with ${credential.slice(0, 8)}: ${r.status} ${r.code}`);
        } else if (r.status !== 403 || r.code !== 'MCP_TOKEN_FORBIDDEN') wrong.push(`${key} with ${credential.slice(0, 8)}: ${r.status} ${r.code}`);
      }
    }
    expect(wrong).toEqual([]);
  });

  it('gateway routes refuse operator keys (401), the webhook refuses them too, and public routes need none', async () => {
    const wrong: string[] = [];
    for (const [key, e] of Object.entries(MATRIX)) {
      if (e.auth === 'gateway' || e.auth === 'webhook') {
        const r = await statusOf(key, keys.owner);
        if (r.status !== 401) wrong.push(`${key} with an owner key: ${r.status} ${r.code}`);
      }
      if (e.auth === 'none') {
        const res = await inject({ ...blank(key), url: blank(key).url.replace('/ui/*', '/ui/index.html') });
        if (res.statusCode === 401 || res.statusCode === 403) wrong.push(`${key}: ${res.statusCode}`);
        const leaked = betaIn(res.body);
        if (leaked.length > 0) wrong.push(`${key} shows beta's ${leaked.join(', ')}`);
      }
    }
    expect(wrong).toEqual([]);
  });
});

describe('a key limited to alpha', () => {
  it('is refused routes that reach every project (403 FORBIDDEN)', async () => {
    const wrong: string[] = [];
    for (const [key, e] of operatorRows()) {
      if (e.reach !== 'every-project') continue;
      const r = await statusOf(key, keys.limitedOwner);
      if (r.status !== 403 || r.code !== 'FORBIDDEN' || !/limited to projects|every project/.test(r.message ?? '')) wrong.push(`${key}: ${r.status} ${r.code} ${r.message}`);
    }
    expect(wrong).toEqual([]);
  });

  it("reads installation settings, which hold none of beta's data", async () => {
    const wrong: string[] = [];
    for (const [key, e] of operatorRows()) {
      if (e.reach !== 'installation') continue;
      for (const credential of [keys.limitedViewer, keys.limitedOwner]) {
        const res = await inject({ ...blank(key), headers: bearer(credential) });
        if (res.statusCode !== 200) wrong.push(`${key}: ${res.statusCode} ${res.body.slice(0, 200)}`);
        const leaked = betaIn(res.body);
        if (leaked.length > 0) wrong.push(`${key} shows beta's ${leaked.join(', ')}`);
      }
    }
    expect(wrong).toEqual([]);
  });

  it("neither reads nor changes beta's data on any route, and lists show alpha's rows only", async () => {
    const wrong: string[] = [];
    const all = Object.entries(MATRIX).flatMap(([key, e]) => (e.auth === 'gateway' || (e.auth === 'operator' && e.reach === 'project') ? e.probes(f).map((p) => ({ key, ...p })) : []));
    // Gateway probes last: a denied call of alpha's agent writes alpha's own INTENT row, naming the session id the
    // agent claimed (details.claimed_session_id): what alpha's agent sent, not something alpha's operators read from beta.
    const probes = [...all.filter((p) => p.as !== 'alphaAgent'), ...all.filter((p) => p.as === 'alphaAgent')];
    expect(probes.length).toBeGreaterThan(60);
    for (const p of probes) {
      // The probe calls the route of its row (a typo would get Fastify's own 404 and pass for a refusal).
      const path = p.key.split(' ')[1]!;
      const pattern = new RegExp(`^${path.replace('{id}', '[0-9a-f-]{36}').replace(/[.*]/g, '\\$&')}(\\?|$)`);
      if (p.method !== p.key.split(' ')[0] || !pattern.test(p.url)) wrong.push(`${p.key} (${p.what}): the probe calls ${p.method} ${p.url}`);
      // A refused read is refused because of the project: the same read with a key without a limit finds it.
      if (p.method === 'GET' && p.expect.status === 404 && p.as !== 'alphaAgent') {
        const control = await inject({ method: 'GET', url: p.url, headers: bearer(keys.owner) });
        if (control.statusCode !== 200) wrong.push(`${p.key} (${p.what}): ${control.statusCode} with a key without a project limit too`);
      }
      const headers = p.as === 'alphaAgent' ? gw.headers(f.alphaProbe.raw) : bearer(keys.limitedOwner);
      const res = await inject({ method: p.method, url: p.url, headers, ...(p.payload ? { payload: p.payload } : {}) });
      const where = `${p.key} (${p.what})`;
      const x = p.expect;
      if (res.statusCode !== x.status) {
        wrong.push(`${where}: ${res.statusCode}, expected ${x.status}: ${res.body.slice(0, 300)}`);
        continue;
      }
      if (x.code && res.json().error?.code !== x.code) wrong.push(`${where}: code ${res.json().error?.code}, expected ${x.code}`);
      const leaked = betaIn(res.body, x.echo);
      if (leaked.length > 0) wrong.push(`${where} shows beta's ${leaked.slice(0, 5).join(', ')}${leaked.length > 5 ? ` and ${leaked.length - 5} more` : ''}`);
      for (const s of x.shows ?? []) if (!res.body.includes(s)) wrong.push(`${where}: alpha's ${s} missing`);
      for (const s of x.hides ?? []) if (res.body.includes(s)) wrong.push(`${where}: shows ${s}`);
      if (x.check) {
        try {
          x.check(res);
        } catch (err) {
          wrong.push(`${where}: ${(err as Error).message.split('\n')[0]}`);
        }
      }
    }
    expect(wrong).toEqual([]);

    // Beta as it was: nothing the probes sent changed it.
    const owner = bearer(gw.owner);
    const token = await ok({ method: 'GET', url: `/v1/keys/${f.beta.rw.id}`, headers: owner }, 200);
    expect(token).toMatchObject({ revoked_at: null, rotated_to: null });
    expect(await ok({ method: 'GET', url: `/v1/keys/${f.beta.halted.id}`, headers: owner }, 200)).toMatchObject({ halt: { trigger: 'UNAUTHORIZED_SERVER' } });
    expect(await ok({ method: 'GET', url: `/v1/sessions/${f.beta.haltedSession}`, headers: owner }, 200)).toMatchObject({ state: 'halted' });
    expect(await ok({ method: 'GET', url: `/v1/sessions/${f.beta.session}`, headers: owner }, 200)).toMatchObject({ state: 'active' });
    expect(await ok({ method: 'GET', url: `/v1/kills/${f.beta.kill}`, headers: owner }, 200)).toMatchObject({ state: 'active' });
    expect(await ok({ method: 'GET', url: `/v1/approvals/${f.beta.approval}`, headers: owner }, 200)).toMatchObject({ state: 'pending' });
    const grants = (await ok({ method: 'GET', url: `/v1/grants?token=${f.beta.rw.id}`, headers: owner }, 200))['grants'] as { id: string; revoked_at: string | null }[];
    expect(grants.find((g) => g.id === f.beta.grant)).toMatchObject({ revoked_at: null });
    const betaAlertsNow = (await ok({ method: 'GET', url: '/v1/alerts?project=beta&limit=500', headers: owner }, 200))['alerts'] as { acknowledged_at: string | null }[];
    expect(betaAlertsNow.length).toBe(alertIds.beta.length);
    expect(betaAlertsNow.every((a) => a.acknowledged_at === null)).toBe(true);
    const opKeys = (await ok({ method: 'GET', url: '/v1/operator-keys', headers: owner }, 200))['keys'] as { id: string; revoked_at: string | null }[];
    expect(opKeys.find((k) => k.id === f.beta.operatorKey)).toMatchObject({ revoked_at: null });
    expect(((await ok({ method: 'GET', url: '/v1/keys?project=beta&limit=500', headers: owner }, 200))['keys'] as unknown[]).length).toBe(3);
    expect(await ok({ method: 'GET', url: `/v1/approvals/${f.toolDefinition}`, headers: owner }, 200)).toMatchObject({ state: 'pending' });
  });

  it("follows the audit trail and the alert stream without beta's new rows (replay and live)", async () => {
    // The stream replays from an alert older than every seeded one, then carries live events.
    const controller = new AbortController();
    const res = await fetch(`${base}/v1/alerts/stream`, { headers: { ...bearer(keys.limitedViewer), 'last-event-id': '00000000-0000-7000-8000-000000000000' }, signal: controller.signal });
    expect(res.status).toBe(200);
    let text = '';
    const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
    const pump = (async () => {
      try {
        for (;;) {
          const { value, done } = await reader.read();
          if (done) return;
          text += value;
        }
      } catch {
        // aborted
      }
    })();
    const follow = ((await ok({ method: 'GET', url: '/v1/audit?limit=1', headers: bearer(keys.limitedViewer) }, 200)) as { follow: string }).follow;

    // New activity in both projects: a halt each (SESSION_HALTED alert, INTENT rows).
    const fresh: Record<string, { decision: string; session: string; token: string }> = {};
    for (const project of ['beta', 'alpha'] as const) {
      const tok = await gw.token('ro', { project });
      const session = (await gw.session(tok.raw)).session_id;
      const d = await gw.decide(tok.raw, { server: 'nosuch', tool: 'y', session_id: session });
      fresh[project] = { decision: d.decision_id, session, token: tok.id };
      if (project === 'beta') for (const [id, what] of [[tok.id, 'new token'], [session, 'new session'], [d.decision_id, 'new decision']] as const) f.beta.fingerprints.set(id, what);
    }
    const deadline = Date.now() + 5_000;
    while (!text.includes(fresh['alpha']!.token) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 25));
    controller.abort();
    await pump;
    expect(text, 'alpha: replayed and live').toContain(fresh['alpha']!.token);
    for (const id of alertIds.alpha) expect(text).toContain(id);
    expect(betaIn(text)).toEqual([]);
    for (const id of alertIds.beta) expect(text).not.toContain(id);

    const after = await inject({ url: `/v1/audit?after=${encodeURIComponent(follow)}`, headers: bearer(keys.limitedViewer) });
    expect(after.statusCode).toBe(200);
    expect(after.body).toContain(fresh['alpha']!.decision);
    expect(betaIn(after.body)).toEqual([]);
  });
});
