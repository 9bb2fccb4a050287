// docs/api.md is rendered from the OpenAPI document the route schemas generate (app.swagger()), so the
// reference cannot drift from the code: test/e2e/ui.test.ts compares the file with a fresh rendering.
// Run `npm run docs:api` after changing a route.

interface Schema {
  type?: string | string[];
  format?: string;
  'x-lowercase'?: boolean;
  enum?: unknown[];
  const?: unknown;
  anyOf?: Schema[];
  oneOf?: Schema[];
  items?: Schema;
  properties?: Record<string, Schema>;
  required?: string[];
  description?: string;
  default?: unknown;
  minimum?: number;
  maximum?: number;
  exclusiveMinimum?: number;
  exclusiveMaximum?: number;
  minLength?: number;
  maxLength?: number;
  minItems?: number;
  maxItems?: number;
  pattern?: string;
  $ref?: string;
}

interface Parameter {
  name: string;
  in: string;
  required?: boolean;
  description?: string;
  schema?: Schema;
}

interface Operation {
  operationId?: string;
  tags?: string[];
  summary?: string;
  description?: string;
  parameters?: Parameter[];
  requestBody?: { required?: boolean; content?: Record<string, { schema?: Schema }> };
  responses?: Record<string, { description?: string; headers?: Record<string, { description?: string; schema?: Schema }>; content?: Record<string, { schema?: Schema }> }>;
  security?: Record<string, string[]>[];
}

export interface OpenApiDocument {
  info?: { title?: string; version?: string; description?: string };
  paths?: Record<string, Record<string, Operation>>;
}

const METHODS = ['get', 'post', 'put', 'patch', 'delete'];

// Order and titles of the sections; tags not listed here follow in alphabetical order.
const TAG_TITLES: Record<string, string> = {
  gateway: 'Gateway routes (gateway key + agent token)',
  decisions: 'Decisions (operators)',
  keys: 'Agent tokens',
  'gateway-keys': 'Gateway keys',
  'operator-keys': 'Operator keys',
  sessions: 'Sessions and halts',
  grants: 'Grants',
  tools: 'Tool definitions',
  approvals: 'Approvals',
  kills: 'Kills (break glass)',
  audit: 'Audit and usage',
  alerts: 'Alerts',
  flags: 'Flags',
  ui: 'Admin UI',
  health: 'Health',
};

const cell = (s: string) => s.replace(/\|/g, '\\|').replace(/\s*\n\s*/g, ' ').trim();

/** A schema as a short type: `string (uuid)`, `"ro" \| "rw"`, `string[]`, `object`. */
export function typeOf(s: Schema | undefined): string {
  if (!s) return 'any';
  if (s.$ref) return s.$ref.replace(/^.*\//, '');
  if (s.const !== undefined) return JSON.stringify(s.const);
  if (s.enum) return s.enum.map((v) => JSON.stringify(v)).join(' \\| ');
  const union = s.anyOf ?? s.oneOf;
  if (union) return [...new Set(union.map(typeOf))].join(' \\| ');
  if (Array.isArray(s.type)) return s.type.join(' \\| ');
  if (s.type === 'array') return `${typeOf(s.items).includes(' ') ? `(${typeOf(s.items)})` : typeOf(s.items)}[]`;
  if (s.type === 'string' && s.format) return `string (${s.format})`;
  // An issued id taken as any string (IssuedId, src/tokens/schemas.ts): read in lower case like a uuid.
  if (s.type === 'string' && s['x-lowercase']) return 'string (id)';
  return s.type ?? 'any';
}

function constraints(s: Schema | undefined): string {
  if (!s) return '';
  const out: string[] = [];
  if (s.default !== undefined) out.push(`default ${JSON.stringify(s.default)}`);
  if (s.minimum !== undefined) out.push(`min ${s.minimum}`);
  if (s.exclusiveMinimum !== undefined) out.push(`more than ${s.exclusiveMinimum}`);
  if (s.maximum !== undefined) out.push(`max ${s.maximum}`);
  if (s.exclusiveMaximum !== undefined) out.push(`less than ${s.exclusiveMaximum}`);
  // A minimum length is a rule a client can break ({"reason":"ok"} is 400): shown like the maximum.
  if (s.minLength !== undefined && s.minLength > 0) out.push(`min length ${s.minLength}`);
  if (s.maxLength !== undefined) out.push(`max length ${s.maxLength}`);
  if (s.minItems !== undefined && s.minItems > 0) out.push(`min items ${s.minItems}`);
  if (s.maxItems !== undefined) out.push(`max items ${s.maxItems}`);
  // A nullable field (a union with null) carries its constraints on the non-null member.
  const union = s.anyOf ?? s.oneOf;
  if (out.length === 0 && union) return union.map(constraints).filter(Boolean).join('; ');
  return out.join(', ');
}

function describe(s: Schema | undefined, fallback = ''): string {
  const text = s?.description ?? fallback;
  const extra = constraints(s);
  return cell([text, extra ? `(${extra})` : ''].filter(Boolean).join(' '));
}

function fieldTable(schema: Schema): string[] {
  const props = schema.properties ?? {};
  const names = Object.keys(props);
  if (names.length === 0) return [`Body: \`${typeOf(schema)}\``, ''];
  const required = new Set(schema.required ?? []);
  return ['| field | type | required | meaning |', '|---|---|---|---|', ...names.map((n) => `| \`${n}\` | \`${typeOf(props[n])}\` | ${required.has(n) ? 'yes' : ''} | ${describe(props[n])} |`), ''];
}

function auth(op: Operation): string {
  const sec = op.security;
  if ((sec && sec.length === 0) || op.tags?.includes('health')) return 'none';
  if (sec?.some((s) => 'unleashWebhookSecret' in s)) {
    return 'the Unleash webhook secret as the whole `Authorization` value, without `Bearer` (UNLEASH_WEBHOOK_SECRET, or the one stored at the first start)';
  }
  if (op.tags?.includes('gateway') || sec?.some((s) => 'agentToken' in s)) return 'gateway key (`Authorization: Bearer ksgw_...`) and agent token (`X-Agent-Token`)';
  return 'operator key (`Authorization: Bearer ksop_...`)';
}

/**
 * One status: a success with its JSON fields, or the media types it answers besides JSON, and the headers
 * it sends. The error statuses' shared body and `Retry-After` are told once, in the introduction.
 */
function response(code: string, r: NonNullable<Operation['responses']>[string] | undefined): string {
  if (!code.startsWith('2')) return `\`${code}\``;
  const parts: string[] = [];
  for (const [type, media] of Object.entries(r?.content ?? {})) {
    const props = type === 'application/json' && media.schema?.properties ? Object.keys(media.schema.properties) : [];
    if (props.length) parts.push(`{${props.slice(0, 8).join(', ')}${props.length > 8 ? ', …' : ''}}`);
    else if (type !== 'application/json') parts.push(`\`${type}\``);
  }
  const headers = Object.keys(r?.headers ?? {});
  const sent = headers.length ? ` (header${headers.length > 1 ? 's' : ''} ${headers.map((h) => `\`${h}\``).join(', ')})` : '';
  return [`\`${code}\``, parts.join(' or ')].filter(Boolean).join(' ') + sent;
}

function responses(op: Operation): string {
  return Object.keys(op.responses ?? {})
    .sort()
    .map((code) => response(code, op.responses?.[code]))
    .join(', ');
}

/** docs/api.md: every route of the OpenAPI document, grouped by tag, with parameters, bodies and responses. */
export function renderApiDoc(spec: OpenApiDocument): string {
  const ops: { tag: string; method: string; path: string; op: Operation }[] = [];
  for (const [path, item] of Object.entries(spec.paths ?? {})) {
    for (const method of METHODS) {
      const op = item[method];
      if (op) ops.push({ tag: op.tags?.[0] ?? 'other', method, path, op });
    }
  }
  const known = Object.keys(TAG_TITLES);
  const tags = [...new Set(ops.map((o) => o.tag))].sort((a, b) => {
    const ia = known.indexOf(a);
    const ib = known.indexOf(b);
    if (ia >= 0 && ib >= 0) return ia - ib;
    if (ia >= 0) return -1;
    if (ib >= 0) return 1;
    return a.localeCompare(b);
  });

  const lines = [
    '# API reference',
    '',
    '<!-- Generated from the route schemas (app.swagger()) by `npm run docs:api`; do not edit by hand. -->',
    '',
    `${spec.info?.title ?? 'API'} ${spec.info?.version ?? ''}. A running control plane serves the full OpenAPI 3 document, with every`,
    'schema, at **`GET /docs/openapi.json`** (no credential needed); load it into any OpenAPI viewer or client',
    'generator. This page lists every route with its parameters; the error body and every code are in',
    '[errors.md](errors.md). The decision contract for gateway authors is explained in [gateway.md](gateway.md);',
    'the token types in [tokens.md](tokens.md).',
    '',
    'Credentials: operator keys (`ksop_`, roles viewer < operator < owner) on the admin API; gateway keys',
    '(`ksgw_`) plus the agent token (`X-Agent-Token: mcp_..._`) on the gateway routes. An agent token or a',
    'gateway key on the admin API is refused with `403 MCP_TOKEN_FORBIDDEN`. `Authorization` or `X-Agent-Token`',
    'sent more than once is refused with `400 INVALID_REQUEST` naming the header (a proxy in front could read',
    'another of the values than the control plane does). Credentials are checked before the body is read (on',
    'the gateway routes the gateway key, then the agent token): a request refused for them gets its `401` or',
    '`403`, never a `400` about its body or path.',
    '',
    'Decisions: every decision, allow or deny, is a `200` from `POST /v1/decisions` (a denial is not an HTTP',
    'error). A gateway treats every non-200 from `/v1/decisions` as a denial: such an answer (`400`, `401`,',
    '`413`, `415`, `503` when the gateway key cannot be checked) carries no decision, and so does a timeout.',
    '',
    'Errors: every status a route answers (but 500, a bug) is listed under it. Routes that read a body answer',
    '`413` and `415` too; routes that check a credential, `400` (a credential header sent twice) and `503` (the',
    'credential store is unavailable). A `503` carries a `Retry-After` header (seconds), and so does a',
    '`429 TOO_MANY_SESSIONS` that knows its wait. The error body is the same everywhere; its `code` is one of',
    '[errors.md](errors.md), and a `400`, `413` or `415` lists the fields at fault in `details` as `{field, problem}`.',
    'A `from`/`to` window whose `from` is not before its `to` is refused (`400` naming `from`). So is a query',
    'parameter a route does not take, on every `/v1/` route (`400` naming it, `is not an accepted field`): a',
    'filter sent to the wrong route is never ignored as if it had been applied.',
    '',
    'Content types: requests and answers are JSON (`application/json`), except the answers listed with another',
    'type under their route: `GET /metrics` (Prometheus text), the CSV and JSON Lines exports (chosen with',
    '`format`) and `GET /v1/alerts/stream` (Server-Sent Events). Headers a success sends (the incident timeline\'s',
    '`X-Truncated` and `X-Next-Cursor`) are named after its status; each operation has an `operationId` in the',
    'OpenAPI document, for generated clients.',
    '',
    'Ids (`uuid`) are issued in lower case; one sent in upper case is read as the same id in lower case, in',
    'paths, query strings and bodies alike. So are the ids typed `string (id)`: session and decision ids where',
    'one the control plane never issued is answered as unknown (`SESSION_UNKNOWN`, 404, no rows), not refused.',
    '',
    '## Contents',
    '',
    ...tags.map((t) => `- [${TAG_TITLES[t] ?? t}](#${(TAG_TITLES[t] ?? t).toLowerCase().replace(/[^a-z0-9 -]/g, '').replace(/ /g, '-')})`),
    '',
  ];

  for (const tag of tags) {
    lines.push(`## ${TAG_TITLES[tag] ?? tag}`, '');
    for (const { method, path, op } of ops.filter((o) => o.tag === tag)) {
      lines.push(`### \`${method.toUpperCase()} ${path}\``, '');
      if (op.summary) lines.push(`${cell(op.summary)}.`.replace(/\.\.$/, '.'), '');
      if (op.description) lines.push(cell(op.description), '');
      lines.push(`Auth: ${auth(op)}.`, '');
      const params = (op.parameters ?? []).filter((p) => p.in === 'query' || p.in === 'path' || p.in === 'header');
      if (params.length) {
        lines.push('| parameter | in | type | required | meaning |', '|---|---|---|---|---|');
        for (const p of params) lines.push(`| \`${p.name}\` | ${p.in} | \`${typeOf(p.schema)}\` | ${p.required ? 'yes' : ''} | ${describe(p.schema, p.description ?? '')} |`);
        lines.push('');
      }
      const body = op.requestBody?.content?.['application/json']?.schema;
      if (body) lines.push(op.requestBody?.required === false ? 'Request body (optional: none, without a Content-Type, is `{}`):' : 'Request body:', '', ...fieldTable(body));
      const resp = responses(op);
      if (resp) lines.push(`Responses: ${resp}.`, '');
    }
  }
  return `${lines.join('\n').replace(/\n{3,}/g, '\n\n').trimEnd()}\n`;
}
