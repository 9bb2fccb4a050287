import { createHash } from 'node:crypto';
import { canonicalJson } from '../canonical-json.js';

/**
 * An MCP tool definition as a gateway reports it. The fields the MCP spec names are typed; anything
 * else an upstream sends (vendor fields, fields of later spec versions such as `execution`) is kept too.
 */
export interface ToolDefinition {
  name: string;
  title?: string;
  description?: string;
  inputSchema?: unknown;
  outputSchema?: unknown;
  annotations?: Record<string, unknown>;
  _meta?: Record<string, unknown>;
  icons?: unknown[];
  [field: string]: unknown;
}

/**
 * Fields of a reported definition that are not hashed: `hash` is the hash itself; `icons` are pictures
 * for a human's UI, never shown to the model and without effect on what a call does, and their URLs
 * often carry signed, rotating query strings (a hashed icon would make every report a new definition).
 */
export const UNHASHED_FIELDS: ReadonlySet<string> = new Set(['hash', 'icons']);

/**
 * The hash gateways send as `tool_hash`: SHA-256 over the canonical JSON of the definition without the
 * fields in UNHASHED_FIELDS. Everything else is pinned: name, title, description, input and output
 * schema, every annotation (the five standard ones and any other), `_meta` (where MCP extensions attach
 * behaviour: the UI a host renders, whether it may call tools) and any field this version does not know
 * (an unknown field may change what the call does). Any change to these is a "rug pull" candidate.
 *
 * A definition with only name, title, description, schemas and annotations hashes as it did before
 * `_meta` and the other fields were accepted (absent fields are left out of the canonical JSON), so
 * existing pins stay valid.
 */
export function toolHash(def: ToolDefinition): string {
  const hashed: Record<string, unknown> = {};
  for (const k of Object.keys(def)) if (!UNHASHED_FIELDS.has(k)) hashed[k] = def[k];
  return `sha256:${createHash('sha256').update(canonicalJson(hashed)).digest('hex')}`;
}

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;
const MAX_DEPTH = 64;

/** Why Postgres cannot store this string (NUL, an unpaired UTF-16 surrogate), or undefined. */
function unstorableText(s: string): string | undefined {
  if (s.includes('\u0000')) return 'contains a NUL character (\\u0000), which cannot be stored';
  if (LONE_SURROGATE.test(s)) return 'contains an unpaired UTF-16 surrogate (\\ud800-\\udfff without its pair), which is not valid Unicode and cannot be stored';
  return undefined;
}

/**
 * The first place in a JSON value that Postgres cannot store (a string or key holding NUL or an unpaired
 * surrogate, or nesting deeper than 64 levels), as a dotted path under `at` and the problem; undefined
 * when the whole value can be stored. A definition that would otherwise be stored with its characters
 * replaced (and so differ from what was hashed) or fail at the database is refused before any write.
 */
export function unstorableAt(value: unknown, at: string, depth = 0): { field: string; problem: string } | undefined {
  if (typeof value === 'string') {
    const problem = unstorableText(value);
    return problem ? { field: at, problem } : undefined;
  }
  if (value === null || typeof value !== 'object') return undefined;
  if (depth >= MAX_DEPTH) return { field: at, problem: `is nested deeper than ${MAX_DEPTH} levels` };
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) {
      const found = unstorableAt(value[i], `${at}.${i}`, depth + 1);
      if (found) return found;
    }
    return undefined;
  }
  for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
    const keyProblem = unstorableText(k);
    if (keyProblem) return { field: at, problem: `has a key that ${keyProblem}` };
    const found = unstorableAt(v, `${at}.${k}`, depth + 1);
    if (found) return found;
  }
  return undefined;
}
