import type { Tool } from '@modelcontextprotocol/sdk/types.js';
import { PROTOCOL_READS } from '../policy/resolve.js';
import { escapeUnsafeCharacters } from '../tokens/names.js';
import { type ToolDefinition, toolHash, unstorableAt } from '../tools/hash.js';

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
  reason: 'invalid-name' | 'duplicate' | 'collision' | 'unstorable';
  message: string;
}

/**
 * Merges the tools of every upstream. A name offered by one server keeps its name; a name offered by
 * several is namespaced `<server>__<tool>` for each of them, so no call reaches the wrong server.
 * Hidden, with `onHidden` told: a name that is not a valid MCP tool name; a name one server lists more
 * than once (every definition of it: which one is pinned and which one shown would be a guess); a
 * definition holding a string the control plane cannot store (NUL, an unpaired surrogate); and every
 * tool whose exposed name another one also gets after namespacing (`evil`'s literal `fs__read_file`
 * against `fs`'s namespaced `read_file`).
 */
export function mergeTools(servers: ReadonlyArray<{ name: string; tools: readonly ReportedTool[] }>, onHidden: (hidden: HiddenTool) => void = () => {}): Map<string, CatalogTool> {
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
      // The control plane refuses a report holding a string Postgres cannot store (400 for the whole
      // report, so every tools/list would fail): such a definition is hidden here instead.
      const { hash: _hash, ...def } = t;
      const unstorable = unstorableAt(def, 'definition');
      if (unstorable) {
        onHidden({ server: s.name, name: t.name, reason: 'unstorable', message: `${s.name}/${t.name}: ${unstorable.field} ${unstorable.problem}; the control plane cannot pin it, so it is hidden` });
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

/** The tool as listed to the agent (hash removed, exposed name). */
export function listedTool(t: CatalogTool): Tool {
  const { hash: _hash, ...def } = t.definition;
  return { ...def, name: t.exposedName, inputSchema: (def.inputSchema as Tool['inputSchema'] | undefined) ?? { type: 'object' } } as Tool;
}
