import type { Tool } from '@modelcontextprotocol/sdk/types.js';
import { MAX_JSON_DEPTH, nestedDeeperThan } from '../http/json-depth.js';
import { PROTOCOL_READS } from '../policy/resolve.js';
import { escapeUnsafeCharacters } from '../tokens/names.js';
import { type ToolDefinition, toolHash, unstorableAt } from '../tools/hash.js';
import { MAX_TOOL_DESCRIPTION_LENGTH, MAX_TOOL_TITLE_LENGTH, MAX_TOOLS_PER_REPORT, MAX_TOOLS_PER_REPORTED_SERVER, MAX_TOOLS_PER_SERVER } from '../tools/limits.js';

// What the agent sees of each upstream tool, and the hash the control plane pins. The agent is shown
// exactly the hashed fields (name, title, description, schemas, the five standard annotations), so
// no part of a definition can change without changing its hash.

const ANNOTATION_KEYS = ['title', 'readOnlyHint', 'destructiveHint', 'idempotentHint', 'openWorldHint'] as const;
/** Separator of namespaced names; tool names of most clients allow only [A-Za-z0-9_-]. */
export const NAMESPACE_SEPARATOR = '__';

export type ToolAnnotations = { title?: string; readOnlyHint?: boolean; destructiveHint?: boolean; idempotentHint?: boolean; openWorldHint?: boolean };

/** A tool definition as reported to POST /v1/gateway/tools. */
export interface ReportedTool extends ToolDefinition {
  annotations?: ToolAnnotations;
  hash: string;
}

export interface CatalogTool {
  /** The name the agent calls. */
  exposedName: string;
  server: string;
  /** The name the upstream knows. */
  name: string;
  definition: ReportedTool;
}

function annotationsOf(raw: unknown): ToolAnnotations | undefined {
  if (raw === null || typeof raw !== 'object') return undefined;
  const src = raw as Record<string, unknown>;
  const out: Record<string, unknown> = {};
  for (const k of ANNOTATION_KEYS) {
    const v = src[k];
    if (k === 'title' ? typeof v === 'string' : typeof v === 'boolean') out[k] = v;
  }
  return Object.keys(out).length > 0 ? (out as ToolAnnotations) : undefined;
}

/** The hashed, reported and shown part of an upstream tool, with its `tool_hash`. */
export function definitionOf(tool: Tool): ReportedTool {
  const def: ToolDefinition & { annotations?: ToolAnnotations } = { name: tool.name };
  if (typeof tool.title === 'string') def.title = tool.title;
  if (typeof tool.description === 'string') def.description = tool.description;
  if (tool.inputSchema !== undefined) def.inputSchema = tool.inputSchema;
  if (tool.outputSchema !== undefined) def.outputSchema = tool.outputSchema;
  const annotations = annotationsOf(tool.annotations);
  if (annotations) def.annotations = annotations;
  // Hashing recurses as deep as the definition goes: an upstream's schema nested 100,000 levels overflowed
  // the stack and failed its whole tools/list. One deeper than the control plane stores is hidden anyway
  // (reportRefusal: unstorable), so it gets the hash of its name and that fact alone.
  if (nestedDeeperThan(def, MAX_JSON_DEPTH)) return { ...def, hash: toolHash({ name: def.name, description: `nested deeper than ${MAX_JSON_DEPTH} levels` }) };
  return { ...def, hash: toolHash(def) };
}

/**
 * MCP tool names (SEP-986, as the SDK validates them): 1–128 of [A-Za-z0-9_.-]. Anything else (a `/`
 * above all) is refused: the control plane decides `resources/read` and `prompts/get` as protocol reads
 * (read scope, whatever the annotations), so an upstream tool with such a name must never reach it.
 * The rule is narrower than the control plane's (TEXT_PATTERN, src/tokens/names.ts): a name it refuses
 * (a line break, ESC, a bidirectional override) would fail the whole tool report, and is hidden here.
 */
const TOOL_NAME = /^[A-Za-z0-9_.-]{1,128}$/;

export function isValidToolName(name: string): boolean {
  return TOOL_NAME.test(name) && !PROTOCOL_READS.has(name);
}

/** An upstream tool the agent is not shown, and why (the gateway logs it as a warning). */
export interface HiddenTool {
  server: string;
  /** The name the upstream knows. */
  name: string;
  reason: 'invalid-name' | 'duplicate' | 'collision' | 'unstorable' | 'forbidden-key' | 'too-long' | 'too-large' | 'report-full';
  message: string;
}

/**
 * The largest body of one tool report (POST /v1/gateway/tools) by default: the control plane's default
 * BODY_LIMIT_BYTES (262144), over which it answers 413 for the whole report. `killswitch.toolReportMaxBytes`.
 */
export const DEFAULT_TOOL_REPORT_MAX_BYTES = 262_144;

/**
 * One definition may take at most this share of the report body (64 KiB of the default 256 KiB): a
 * larger one is hidden (`too-large`), so no single tool can crowd out the rest. Real definitions are a few KB.
 */
export const TOOL_SHARE_OF_REPORT = 4;

/** The largest definition (its JSON as reported, hash included) a report of `reportMaxBytes` carries. */
export const maxToolBytes = (reportMaxBytes: number): number => Math.floor(reportMaxBytes / TOOL_SHARE_OF_REPORT);

/** Where a JSON value holds a key the control plane's JSON parser refuses (prototype poisoning), or undefined. */
function forbiddenKeyAt(value: unknown, at: string): string | undefined {
  if (value === null || typeof value !== 'object') return undefined;
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) {
      const found = forbiddenKeyAt(value[i], `${at}.${i}`);
      if (found) return found;
    }
    return undefined;
  }
  const o = value as Record<string, unknown>;
  if (Object.hasOwn(o, '__proto__')) return `${at}.__proto__`;
  if (Object.hasOwn(o, 'constructor')) {
    const c = o['constructor'];
    if (c !== null && typeof c === 'object' && Object.hasOwn(c, 'prototype')) return `${at}.constructor`;
  }
  for (const [k, v] of Object.entries(o)) {
    const found = forbiddenKeyAt(v, `${at}.${k}`);
    if (found) return found;
  }
  return undefined;
}

/** Characters as the control plane's schema counts them (code points, not UTF-16 units). */
const codePoints = (s: string): number => [...s].length;

/**
 * Why the control plane would refuse a report holding this definition (400 or 413 for the whole report,
 * failing every agent's tools/list), or undefined. Checked as the control plane checks (src/tools/hash.ts
 * `unstorableAt`, src/tools/limits.ts, the prototype-poisoning check of its JSON parser), on the JSON
 * the report carries:
 * - a string Postgres cannot store (NUL, an unpaired surrogate) or nesting deeper than 64 levels;
 * - larger than `maxBytes` (a quarter of the report's budget, `maxToolBytes`);
 * - a key `__proto__`, or `constructor` holding a `prototype`, anywhere (Fastify refuses the body);
 * - a title or annotations.title over 500 characters, a description over 20,000.
 */
export function reportRefusal(tool: ReportedTool, maxBytes: number): { reason: HiddenTool['reason']; problem: string } | undefined {
  const { hash: _hash, ...def } = tool;
  const unstorable = unstorableAt(def, 'definition');
  if (unstorable) return { reason: 'unstorable', problem: `${unstorable.field} ${unstorable.problem}; the control plane cannot pin it` };
  const json = JSON.stringify(tool);
  const bytes = Buffer.byteLength(json, 'utf8');
  if (bytes > maxBytes) return { reason: 'too-large', problem: `its definition is ${bytes} bytes of JSON, more than the ${maxBytes} one tool may take of a tool report` };
  // JSON.stringify writes keys without escapes: a key that is neither appears nowhere in the text.
  if (json.includes('"__proto__"') || json.includes('"constructor"')) {
    const at = forbiddenKeyAt(JSON.parse(json), 'definition');
    if (at) return { reason: 'forbidden-key', problem: `${at} is a key the control plane refuses (__proto__, or constructor holding prototype: prototype poisoning)` };
  }
  const tooLong = (field: string, value: unknown, max: number) =>
    typeof value === 'string' && value.length > max && codePoints(value) > max ? `definition.${field} is ${codePoints(value)} characters long; the control plane accepts at most ${max}` : undefined;
  const long =
    tooLong('title', def.title, MAX_TOOL_TITLE_LENGTH) ??
    tooLong('annotations.title', def.annotations?.title, MAX_TOOL_TITLE_LENGTH) ??
    tooLong('description', def.description, MAX_TOOL_DESCRIPTION_LENGTH);
  if (long) return { reason: 'too-long', problem: long };
  return undefined;
}

/**
 * Merges the tools of every upstream. A name offered by one server keeps its name; a name offered by
 * several is namespaced `<server>__<tool>` for each of them, so no call reaches the wrong server.
 * Hidden, with `onHidden` told: a name that is not a valid MCP tool name; a name one server lists more
 * than once (every definition of it: which one is pinned and which one shown would be a guess); a
 * definition the control plane would refuse (`reportRefusal`: a string it cannot store, more than
 * `maxBytes` of JSON, a prototype-poisoning key, a title or description too long); and every tool whose
 * exposed name another one also gets after namespacing (`evil`'s literal `fs__read_file` against `fs`'s
 * namespaced `read_file`), or that namespacing makes longer than a valid tool name.
 */
export function mergeTools(
  servers: ReadonlyArray<{ name: string; tools: readonly ReportedTool[] }>,
  onHidden: (hidden: HiddenTool) => void = () => {},
  maxBytes: number = maxToolBytes(DEFAULT_TOOL_REPORT_MAX_BYTES),
): Map<string, CatalogTool> {
  const offered: Array<{ server: string; tool: ReportedTool }> = [];
  for (const s of servers) {
    const listed = new Map<string, number>();
    for (const t of s.tools) listed.set(t.name, (listed.get(t.name) ?? 0) + 1);
    for (const [name, times] of listed) {
      if (!isValidToolName(name)) {
        // JSON.stringify escapes line breaks and ESC, not bidirectional overrides or C1 controls.
        const shown = escapeUnsafeCharacters(JSON.stringify(name));
        onHidden({ server: s.name, name, reason: 'invalid-name', message: `${s.name} offers a tool named ${shown}, which is not a valid MCP tool name (1-128 of A-Z a-z 0-9 _ . -, not a protocol method); it is hidden` });
      } else if (times > 1) {
        onHidden({ server: s.name, name, reason: 'duplicate', message: `${s.name} lists the tool "${name}" ${times} times; every definition of it is hidden` });
      }
    }
    for (const t of s.tools) {
      if (!isValidToolName(t.name) || listed.get(t.name) !== 1) continue;
      // The control plane refuses a whole report over one definition it cannot take (400 or 413, so every
      // tools/list of every agent would fail): such a definition is hidden here instead.
      const refusal = reportRefusal(t, maxBytes);
      if (refusal) {
        onHidden({ server: s.name, name: t.name, reason: refusal.reason, message: `${s.name}/${t.name}: ${refusal.problem}, so it is hidden` });
        continue;
      }
      offered.push({ server: s.name, tool: t });
    }
  }

  const servingName = new Map<string, number>();
  for (const { tool } of offered) servingName.set(tool.name, (servingName.get(tool.name) ?? 0) + 1);
  const byExposed = new Map<string, CatalogTool[]>();
  for (const { server, tool } of offered) {
    const exposedName = (servingName.get(tool.name) ?? 0) > 1 ? `${server}${NAMESPACE_SEPARATOR}${tool.name}` : tool.name;
    // A valid name can be too long once namespaced: the gateway never shows an agent a name it would
    // hide if an upstream offered it (clients may refuse the whole list over one).
    if (!isValidToolName(exposedName)) {
      onHidden({ server, name: tool.name, reason: 'invalid-name', message: `${server}/${tool.name} would be shown as "${exposedName.slice(0, 40)}…", ${exposedName.length} characters: more than a valid MCP tool name may have (128); it is hidden` });
      continue;
    }
    byExposed.set(exposedName, [...(byExposed.get(exposedName) ?? []), { exposedName, server, name: tool.name, definition: tool }]);
  }

  const out = new Map<string, CatalogTool>();
  for (const [exposedName, tools] of byExposed) {
    const [only, ...others] = tools;
    if (only && others.length === 0) {
      out.set(exposedName, only);
      continue;
    }
    const owners = tools.map((t) => `${t.server}/${t.name}`).join(' and ');
    for (const t of tools) onHidden({ server: t.server, name: t.name, reason: 'collision', message: `${owners} would all be shown as "${exposedName}"; ${t.server}/${t.name} is hidden (and so are the others)` });
  }
  return out;
}

/** What one tool report may carry: its body in bytes, and tool definitions in all and per server. */
export interface ReportLimits {
  maxBytes: number;
  maxTools: number;
  maxToolsPerServer: number;
}

/**
 * The reference gateway's limits: `maxBytes` (`toolReportMaxBytes`), MAX_TOOLS_PER_REPORT (2,000) in
 * all, and per server MAX_TOOLS_PER_SERVER (500), under the report's own 1,000: the control plane never
 * pins more than 500 names of one server (the rest are refused, never callable), while every reported
 * definition costs it a transaction on every tools/list.
 */
export const reportLimits = (maxBytes = DEFAULT_TOOL_REPORT_MAX_BYTES): ReportLimits => ({
  maxBytes,
  maxTools: MAX_TOOLS_PER_REPORT,
  maxToolsPerServer: Math.min(MAX_TOOLS_PER_SERVER, MAX_TOOLS_PER_REPORTED_SERVER),
});

/**
 * Max-min fair shares of `total` (integers): a demand at most its share gets all of it, and what it
 * leaves is shared among the larger ones. Deterministic: equal demands keep their order.
 */
export function fairShares(demands: readonly number[], total: number): number[] {
  const order = demands.map((_, i) => i).sort((a, b) => demands[a]! - demands[b]! || a - b);
  const shares = demands.map(() => 0);
  let left = Math.max(0, total);
  order.forEach((i, k) => {
    const share = Math.min(demands[i]!, Math.floor(left / (order.length - k)));
    shares[i] = share;
    left -= share;
  });
  return shares;
}

/**
 * The catalog cut to what one tool report carries, so the control plane never refuses the whole report
 * (413 over its body limit, 400 over MAX_TOOLS_PER_REPORT or MAX_TOOLS_PER_REPORTED_SERVER; see
 * reportLimits). `servers`
 * are the report's servers in its order, with the identities it sends (their bytes count too).
 *
 * Fair between upstreams, so one that lists many or large tools cannot push the others' out: the count
 * (at most maxToolsPerServer each, maxTools in all) and then the bytes left after the identities are
 * shared max-min fairly (`fairShares`): a server that needs no more than its equal share gets all it
 * needs, the rest is shared among the others. Within its share a server keeps its tools in the order it
 * lists them; one that does not fit is hidden (`report-full`, `onHidden` told) and a later, smaller one
 * may still fit. Each tool counts its JSON and one comma; the identities and the rest of the body count
 * as `JSON.stringify` writes them (as ControlPlaneClient.reportTools sends the report).
 */
export function fitReport(
  catalog: ReadonlyMap<string, CatalogTool>,
  servers: ReadonlyArray<{ name: string; identity: unknown }>,
  limits: ReportLimits,
  onHidden: (hidden: HiddenTool) => void = () => {},
): Map<string, CatalogTool> {
  const envelope = Buffer.byteLength(JSON.stringify({ servers: servers.map((s) => ({ name: s.name, identity: s.identity, tools: [] })) }), 'utf8');
  const toolBytes = limits.maxBytes - envelope;
  const byServer = servers.map((s) => [...catalog.values()].filter((t) => t.server === s.name));
  const countShares = fairShares(
    byServer.map((tools) => Math.min(tools.length, limits.maxToolsPerServer)),
    limits.maxTools,
  );
  const counted = byServer.map((tools, i) => tools.slice(0, countShares[i]));
  const costs = counted.map((tools) => tools.map((t) => Buffer.byteLength(JSON.stringify(t.definition), 'utf8') + 1));
  const byteShares = fairShares(
    costs.map((c) => c.reduce((a, b) => a + b, 0)),
    toolBytes,
  );

  const kept = new Set<CatalogTool>();
  byServer.forEach((tools, i) => {
    const server = servers[i]!.name;
    let used = 0;
    tools.forEach((t, j) => {
      const cost = costs[i]![j];
      if (cost === undefined) {
        const why = `${server} lists ${tools.length} tools that could be shown and the tool report has room for ${countShares[i]} of them (at most ${limits.maxToolsPerServer} per server, as many as the control plane pins, and ${limits.maxTools} in all, shared fairly among the upstreams)`;
        onHidden({ server, name: t.name, reason: 'report-full', message: `${server}/${t.name}: ${why}, so it is hidden` });
      } else if (used + cost > byteShares[i]!) {
        const why =
          toolBytes <= 0
            ? `the upstream identities alone take ${envelope} bytes of the ${limits.maxBytes} a tool report may have`
            : `its definition (${cost - 1} bytes of JSON) does not fit in what is left of ${server}'s share of the tool report (${byteShares[i]! - used} of ${byteShares[i]} bytes; ${limits.maxBytes} bytes in all, shared fairly among the upstreams: killswitch.toolReportMaxBytes)`;
        onHidden({ server, name: t.name, reason: 'report-full', message: `${server}/${t.name}: ${why}, so it is hidden` });
      } else {
        used += cost;
        kept.add(t);
      }
    });
  });
  return new Map([...catalog].filter(([, t]) => kept.has(t)));
}

/** The tool as listed to the agent (hash removed, exposed name). */
export function listedTool(t: CatalogTool): Tool {
  const { hash: _hash, ...def } = t.definition;
  return { ...def, name: t.exposedName, inputSchema: (def.inputSchema as Tool['inputSchema'] | undefined) ?? { type: 'object' } } as Tool;
}
