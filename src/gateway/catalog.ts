import type { Tool } from '@modelcontextprotocol/sdk/types.js';
import { type ToolDefinition, toolHash } from '../tools/hash.js';

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
 * Merges the tools of every upstream. A name offered by one server keeps its name; a name offered by
 * several is namespaced `<server>__<tool>` for each of them, so no call reaches the wrong server.
 */
export function mergeTools(servers: ReadonlyArray<{ name: string; tools: readonly ReportedTool[] }>): Map<string, CatalogTool> {
  const count = new Map<string, number>();
  for (const s of servers) for (const t of s.tools) count.set(t.name, (count.get(t.name) ?? 0) + 1);
  const out = new Map<string, CatalogTool>();
  for (const s of servers) {
    for (const t of s.tools) {
      const exposedName = (count.get(t.name) ?? 0) > 1 ? `${s.name}${NAMESPACE_SEPARATOR}${t.name}` : t.name;
      out.set(exposedName, { exposedName, server: s.name, name: t.name, definition: t });
    }
  }
  return out;
}

/** The tool as listed to the agent (hash removed, exposed name). */
export function listedTool(t: CatalogTool): Tool {
  const { hash: _hash, ...def } = t.definition;
  return { ...def, name: t.exposedName, inputSchema: (def.inputSchema as Tool['inputSchema'] | undefined) ?? { type: 'object' } } as Tool;
}
