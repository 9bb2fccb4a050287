import type { UpstreamLimits } from './config.js';

// The gateway's own result guards (seed 001 trigger 5 and its max-rows / max-execution-time limits):
// applied to every result before anything reaches the agent, whatever the control plane answers.

export type GuardTrigger = 'LARGE_RESULT' | 'MAX_ROWS' | 'MAX_EXECUTION_TIME';

/** Keys under which tools conventionally return rows in structured content. */
const ROW_KEYS = ['rows', 'results', 'records', 'items', 'data'] as const;
/** Larger texts are not parsed to count rows: the size guard already bounds them. */
const MAX_PARSED_TEXT = 8 * 1_048_576;

export function resultBytes(result: unknown): number {
  return Buffer.byteLength(JSON.stringify(result) ?? '', 'utf8');
}

/**
 * Rows in a result, when it has any: an array under a conventional key of the structured content, or
 * a text block that is a JSON array (server-postgres answers a query that way). Undefined otherwise.
 */
export function resultRows(result: { structuredContent?: unknown; content?: unknown }): number | undefined {
  const structured = result.structuredContent;
  if (structured !== null && typeof structured === 'object' && !Array.isArray(structured)) {
    for (const k of ROW_KEYS) {
      const v = (structured as Record<string, unknown>)[k];
      if (Array.isArray(v)) return v.length;
    }
  }
  if (Array.isArray(result.content)) {
    let rows: number | undefined;
    for (const block of result.content as Array<{ type?: unknown; text?: unknown }>) {
      if (block?.type !== 'text' || typeof block.text !== 'string') continue;
      const text = block.text.trimStart();
      if (!text.startsWith('[') || text.length > MAX_PARSED_TEXT) continue;
      try {
        const parsed: unknown = JSON.parse(text);
        if (Array.isArray(parsed)) rows = (rows ?? 0) + parsed.length;
      } catch {
        // prose that starts with "[" is not rows
      }
    }
    return rows;
  }
  return undefined;
}

export function guardTrigger(limits: UpstreamLimits, bytes: number, rows: number | undefined): { trigger: GuardTrigger; message: string } | undefined {
  if (bytes > limits.maxResultBytes) {
    return { trigger: 'LARGE_RESULT', message: `the result is ${bytes} bytes, over the gateway's limit of ${limits.maxResultBytes} bytes; it was withheld` };
  }
  if (limits.maxRows !== undefined && rows !== undefined && rows > limits.maxRows) {
    return { trigger: 'MAX_ROWS', message: `the result has ${rows} rows, over the gateway's limit of ${limits.maxRows}; it was withheld` };
  }
  return undefined;
}
