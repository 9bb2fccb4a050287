import { GATEWAY_CODE, type GatewayCode } from '../errors.js';
import type { UpstreamLimits } from './config.js';

// The gateway's own result guards (seed 001 trigger 5 and its max-rows / max-execution-time limits):
// applied to every result before anything reaches the agent, whatever the control plane answers.

export type GuardTrigger = Extract<GatewayCode, 'LARGE_RESULT' | 'MAX_ROWS' | 'MAX_EXECUTION_TIME'>;

export function resultBytes(result: unknown): number {
  return Buffer.byteLength(JSON.stringify(result) ?? '', 'utf8');
}

const isRecord = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);

/**
 * The longest collection of rows anywhere in a JSON value (iterative: nesting depth costs no stack), or
 * undefined: an array, or an object of two or more keys whose values are all objects (rows keyed by id,
 * `{"1": {...}, "2": {...}}`, as a result can hold them to dodge a count of arrays).
 */
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
      const values = Object.values(v);
      if (values.length >= 2 && values.every(isRecord)) longest = Math.max(longest ?? 0, values.length);
      for (const item of values) stack.push(item);
    }
  }
  return longest;
}

/** The JSON a text holds, when it starts like JSON and parses; texts over the limit are not parsed. */
function textJson(text: unknown, maxParsedBytes: number): unknown {
  if (typeof text !== 'string' || text.length > maxParsedBytes) return undefined;
  const t = text.trimStart();
  if (!t.startsWith('[') && !t.startsWith('{')) return undefined;
  try {
    return JSON.parse(t);
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
  // Texts that are one JSON object each, without a collection inside: one row per block once there are
  // two or more (a table answered as one object per content block), none for a single object.
  let objects = 0;
  const items = [...(Array.isArray(result.content) ? result.content : []), ...(Array.isArray(result.contents) ? result.contents : [])] as Array<{ type?: unknown; text?: unknown; resource?: { text?: unknown } }>;
  const count = (text: unknown) => {
    const json = textJson(text, maxParsedBytes);
    const rows = longestArray(json);
    if (rows === undefined && isRecord(json)) objects++;
    blocks = add(blocks, rows);
  };
  for (const block of items) {
    if (block === null || typeof block !== 'object') continue;
    count(block.text);
    if (block.type === 'resource') count(block.resource?.text);
  }
  if (objects >= 2) blocks = add(blocks, objects);
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
