import { redactText, redactValue } from '../audit/redact.js';

// The compact record of one call kept on a session's last-calls list: what a halt answer and
// GET /v1/sessions/:id show as "the last 3 tool calls with arguments and outcomes" (seed 001).

export interface CallOutcome {
  status: string;
  duration_ms?: number;
  result_bytes?: number;
  rows?: number;
  error?: string;
}

export interface CallSummary {
  id: string;
  /** Redis time (ms since epoch) when the gate saw the call. */
  at: number;
  server: string;
  tool: string;
  /** The arguments as JSON, secrets redacted, truncated to ARGUMENTS_MAX_CHARS. */
  args: string;
  decision: 'allow' | 'deny';
  code: string;
  /** What the gateway reported after the call (POST /v1/decisions/:id/result). */
  outcome?: CallOutcome;
}

export const ARGUMENTS_MAX_CHARS = 500;

// Operators read these lists and halt answers show them to the gateway: secrets an agent passed as
// arguments are masked exactly as in the audit trail (keys that name secrets, and values that look like
// credentials wherever they appear; src/audit/redact.ts).

/** Arguments as a short JSON string: redacted, then cut to `max` characters. */
export function summarizeArguments(args: Record<string, unknown>, max = ARGUMENTS_MAX_CHARS): string {
  let text: string;
  try {
    text = JSON.stringify(redactValue(args)) ?? '{}';
  } catch {
    text = '"(arguments not serialisable)"';
  }
  return text.length <= max ? text : cutText(text, max);
}

/** `text` cut to `max` characters, the last one `…`. */
function cutText(text: string, max: number): string {
  let cut = text.slice(0, max - 1);
  // Never half a surrogate pair: a lone one is escaped as \udXXX, which Redis's cjson refuses to decode
  // (the scripts that update a last-calls entry would fail on it).
  const last = cut.charCodeAt(cut.length - 1);
  if (last >= 0xd800 && last <= 0xdbff) cut = cut.slice(0, -1);
  return `${cut}…`;
}

/** A tool name as listed: masked like the audit row's (a gateway may send one holding a credential). */
export function summarizeTool(tool: string): string {
  return redactText(tool);
}

export const OUTCOME_ERROR_MAX_CHARS = 500;

/**
 * The error a gateway reported, as listed: masked as in the RESULT row, then cut. An upstream's error
 * text can hold whatever the call touched (a DSN with its password, a token, a row of a table); viewers,
 * the admin UI and halt answers show it. Masked before the cut, so a cut cannot split a credential out
 * of its pattern.
 */
export function outcomeError(error: string, max = OUTCOME_ERROR_MAX_CHARS): string {
  const masked = redactText(error);
  return masked.length <= max ? masked : cutText(masked, max);
}

/**
 * A listed call as shown: its tool name and error masked. Entries written before they were masked live as
 * long as a halted session (and in its stored halt summary), so they are masked as they are read.
 */
export function maskedCallSummary<T extends Partial<CallSummary>>(e: T): T {
  if (typeof e.tool === 'string') e.tool = redactText(e.tool);
  if (typeof e.outcome?.error === 'string') e.outcome.error = redactText(e.outcome.error);
  return e;
}

/** Parses list entries written by the Lua scripts; a damaged entry is skipped, not fatal. */
export function parseCallSummaries(raw: readonly string[]): CallSummary[] {
  const out: CallSummary[] = [];
  for (const item of raw) {
    try {
      out.push(maskedCallSummary(JSON.parse(item) as CallSummary));
    } catch {
      // ignore
    }
  }
  return out;
}
