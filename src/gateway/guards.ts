import { GATEWAY_CODE, type GatewayCode } from '../errors.js';
import type { UpstreamLimits } from './config.js';

// The gateway's own result guards (seed 001 trigger 5 and its max-rows / max-execution-time limits):
// applied to every result before anything reaches the agent, whatever the control plane answers.

export type GuardTrigger = Extract<GatewayCode, 'LARGE_RESULT' | 'MAX_ROWS' | 'MAX_EXECUTION_TIME'>;

export function resultBytes(result: unknown): number {
  return Buffer.byteLength(JSON.stringify(result) ?? '', 'utf8');
}

/** The longest array anywhere in a JSON value (iterative: nesting depth costs no stack), or undefined. */
function longestArray(value: unknown): number | undefined {
  let longest: number | undefined;
  const stack: unknown[] = [value];
  while (stack.length > 0) {
    const v = stack.pop();
    if (v === null || typeof v !== 'object') continue;
    if (Array.isArray(v)) {
      longest = Math.max(longest ?? 0, v.length);
      for (const item of v) stack.push(item);
    } else {
      for (const item of Object.values(v)) stack.push(item);
    }
  }
  return longest;
}

/** Rows in one text: the longest array of the JSON it holds. Prose, and texts over the limit, count none. */
function textRows(text: unknown, maxParsedBytes: number): number | undefined {
  if (typeof text !== 'string' || text.length > maxParsedBytes) return undefined;
  const t = text.trimStart();
  if (!t.startsWith('[') && !t.startsWith('{')) return undefined;
  try {
    return longestArray(JSON.parse(t));
  } catch {
    // prose that starts with "[" or "{" is not rows
    return undefined;
  }
}

const add = (a: number | undefined, b: number | undefined) => (a === undefined ? b : b === undefined ? a : a + b);

/**
 * Rows in a result, when it has any: the longest array anywhere in the structured content, and in each
 * JSON text (text blocks, embedded resources, resources/read contents), added up over the blocks.
 * `{"rows": [...]}`, `[{"json_agg": [...]}]` and a bare array all count their rows. Texts longer than
 * `maxParsedBytes` characters (the size limit: such a result is withheld anyway) are not parsed; the
 * structured content, already parsed, is walked whatever its size. Undefined when
 * no array is found. A guard on what the server returns, not a boundary: see docs/gateway.md.
 */
export function resultRows(result: { structuredContent?: unknown; content?: unknown; contents?: unknown }, maxParsedBytes: number): number | undefined {
  const structured = longestArray(result.structuredContent);
  let blocks: number | undefined;
  const items = [...(Array.isArray(result.content) ? result.content : []), ...(Array.isArray(result.contents) ? result.contents : [])] as Array<{ type?: unknown; text?: unknown; resource?: { text?: unknown } }>;
  for (const block of items) {
    if (block === null || typeof block !== 'object') continue;
    blocks = add(blocks, textRows(block.text, maxParsedBytes));
    if (block.type === 'resource') blocks = add(blocks, textRows(block.resource?.text, maxParsedBytes));
  }
  if (structured === undefined) return blocks;
  return Math.max(structured, blocks ?? 0);
}

export function guardTrigger(limits: UpstreamLimits, bytes: number, rows: number | undefined): { trigger: GuardTrigger; message: string } | undefined {
  if (bytes > limits.maxResultBytes) {
    return { trigger: GATEWAY_CODE.LARGE_RESULT, message: `the result is ${bytes} bytes, over the gateway's limit of ${limits.maxResultBytes} bytes; it was withheld` };
  }
  if (limits.maxRows !== undefined && rows !== undefined && rows > limits.maxRows) {
    return { trigger: GATEWAY_CODE.MAX_ROWS, message: `the result has ${rows} rows, over the gateway's limit of ${limits.maxRows}; it was withheld` };
  }
  return undefined;
}
