import { createHash } from 'node:crypto';
import { canonicalJson } from '../canonical-json.js';

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
