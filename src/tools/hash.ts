import { createHash } from 'node:crypto';

/** JSON with object keys sorted at every level, so equal definitions hash equally. */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value) ?? 'null';
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  const obj = value as Record<string, unknown>;
  const keys = Object.keys(obj)
    .filter((k) => obj[k] !== undefined)
    .sort();
  return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(obj[k])}`).join(',')}}`;
}

export interface ToolDefinition {
  name: string;
  title?: string;
  description?: string;
  inputSchema?: unknown;
  outputSchema?: unknown;
  annotations?: Record<string, unknown>;
}

/**
 * The hash gateways send as `tool_hash`: SHA-256 over the canonical JSON of what the agent sees of a
 * tool (name, title, description, schemas, annotations). Any change to these is a "rug pull" candidate.
 */
export function toolHash(def: ToolDefinition): string {
  const { name, title, description, inputSchema, outputSchema, annotations } = def;
  return `sha256:${createHash('sha256').update(canonicalJson({ name, title, description, inputSchema, outputSchema, annotations })).digest('hex')}`;
}
