import { SETTINGS, type SettingSpec } from '../config.js';
import { DECISION_CODES, ERROR_CODES, GATEWAY_CODES, GATEWAY_RPC_ERRORS } from '../errors.js';

const cell = (s: string) => s.replace(/\|/g, '\\|').replace(/\n/g, ' ');

/** docs/errors.md: every stable code, from the one table in src/errors.ts. */
export function renderErrorsDoc(): string {
  const lines = [
    '# Codes',
    '',
    '<!-- Generated from src/errors.ts by `npm run docs:gen`; do not edit by hand. -->',
    '',
    'Every code is stable: match on the code, not on the message text.',
    '',
    '## Decision codes',
    '',
    '`POST /v1/decisions` answers `200` with `{"decision": "allow" | "deny", "code": ...}`. A denial is not an',
    'HTTP error. "May halt" marks codes that fire a kill-switch trigger (seed 001): the session and, by',
    'default, every session of the same token are halted until an operator resumes them.',
    '',
    '| code | may halt | meaning |',
    '|---|---|---|',
    ...Object.entries(DECISION_CODES).map(([code, d]) => `| \`${code}\` | ${d.halts ? 'yes' : ''} | ${cell(d.doc)} |`),
    '',
    '## HTTP errors',
    '',
    'Every error body is `{"error": {"code", "message", "details?"}}`, `code` one of the table below (the OpenAPI',
    'document types it as that enum); for `INVALID_REQUEST`, `PAYLOAD_TOO_LARGE` and `UNSUPPORTED_MEDIA_TYPE`,',
    '`details` is a list of `{field, problem}`. The credentials are checked before anything else in the',
    'request, before the body is parsed: on the gateway routes the gateway key (`Authorization`) first, then',
    'the agent token (`X-Agent-Token`); on the admin API the operator key. Without a valid one the answer is',
    '`401` (on the admin API, `403` for an agent token or a gateway key), never a `400` describing what the',
    'body or path should have held; the one `400` that can come first is a credential header sent twice.',
    "(The result report, `POST /v1/decisions/:id/result`, also accepts an agent token that ended after its",
    "call was allowed: the call ran.) On the gateway routes the 401's message says which header is at fault",
    'and what it holds, e.g. `Authorization holds an agent token: it takes the gateway key ("Authorization:',
    'Bearer ksgw_..."); the agent token goes in X-Agent-Token.` (told from the credential\'s prefix and',
    'checksum, which are not secret).',
    '',
    '| status | code | meaning |',
    '|---|---|---|',
    ...Object.entries(ERROR_CODES).map(([code, e]) => `| ${e.status} | \`${code}\` | ${cell(e.doc)} |`),
    '',
    '## Gateway codes',
    '',
    'The reference gateway (`killswitch gateway`, docs/gateway.md) passes the codes above on to the agent and',
    'adds its own. Each starts the text the agent reads (a tool result with `isError`, or the message of a',
    'JSON-RPC error for `resources/read`, `prompts/get` and an unknown tool); the result of a decided tool call',
    'also carries it as `_meta["killswitch/decision"].code`, a JSON-RPC error as `error.data.code`.',
    '',
    '| code | meaning | what to do |',
    '|---|---|---|',
    ...Object.entries(GATEWAY_CODES).map(([code, g]) => `| \`${code}\` | ${cell(g.doc)} | ${cell(g.action)} |`),
    '',
    '### JSON-RPC error codes of the gateway',
    '',
    'What the gateway answers as a JSON-RPC error (not a tool result) carries one of these `error.code`s. Its',
    'message starts with a code of the tables above and `error.data.code` holds that code too (calls, reads,',
    'prompts and lists alike; a refused method or list cursor has neither). Match on `error.data.code`.',
    '',
    '| `error.code` | when |',
    '|---|---|',
    ...Object.values(GATEWAY_RPC_ERRORS).map((e) => `| \`${e.code}\` | ${cell(e.doc)} |`),
    '',
  ];
  return lines.join('\n');
}

/** docs/configuration.md: every environment variable, from SETTINGS in src/config.ts. */
/**
 * The bounds config.ts checks, as `, 10 to 604800`: a value outside them stops the start, so the table
 * says them (SESSION_IDLE_TIMEOUT_S=5 was found only from the start error).
 */
function rangeOf(s: SettingSpec): string {
  if (s.min !== undefined && s.max !== undefined) return `, ${s.min} to ${s.max}`;
  if (s.min !== undefined) return `, at least ${s.min}`;
  if (s.max !== undefined) return `, at most ${s.max}`;
  return '';
}

export function renderConfigurationDoc(): string {
  const settings = SETTINGS as readonly SettingSpec[];
  const lines = [
    '# Configuration',
    '',
    '<!-- Generated from src/config.ts by `npm run docs:gen`; do not edit by hand. -->',
    '',
    'All configuration comes from environment variables, read and validated in one place',
    '(`src/config.ts`). A bad value stops the start with a message naming the variable and an example;',
    '`killswitch config check` validates without starting.',
    '',
    '| variable | type | default | example | meaning |',
    '|---|---|---|---|---|',
    ...settings.map((s) => {
      const type = s.type === 'enum' ? `one of ${s.values?.join(', ')}` : `${s.type}${rangeOf(s)}`;
      const def = s.default === undefined ? '(unset)' : s.default === '' ? '(empty)' : s.secret ? `\`${s.default}\` (dev only)` : `\`${s.default}\``;
      return `| \`${s.env}\` | ${cell(type)} | ${cell(def)} | \`${cell(s.example)}\` | ${cell(s.doc)} |`;
    }),
    '',
  ];
  return lines.join('\n');
}
