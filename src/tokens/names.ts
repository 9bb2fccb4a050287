// The names of gateway and operator keys are echoed in alert messages ("Operator <name> revoked ..."),
// audit rows and the UI. One check for every way a key is made: the HTTP routes (their schema carries
// NAME_PATTERN, and CredentialService refuses what a pattern cannot say well) and
// `killswitch operators create`, which writes to the database directly.

export const NAME_MAX_LENGTH = 200;

/**
 * Characters that could make an alert read as something else: control characters (U+0000–U+001F,
 * U+007F–U+009F, so no line breaks), line and paragraph separators (U+2028/9), and bidirectional marks,
 * embeddings, overrides and isolates: every Bidi_Control character (U+061C, U+200E/F, U+202A–U+202E,
 * U+2066–U+2069; U+202E reverses the text after it).
 */
const UNSAFE = '\\u0000-\\u001F\\u007F-\\u009F\\u061C\\u200E\\u200F\\u2028\\u2029\\u202A-\\u202E\\u2066-\\u2069';
/** The same characters as a regex class body (`[${UNSAFE_CHARACTER_RANGES}]`). */
export const UNSAFE_CHARACTER_RANGES = UNSAFE;
export const NAME_PATTERN = `^[^${UNSAFE}]+$`;
/**
 * The same characters refused in what agents and gateways name and declare, which operators read in
 * audit rows, alerts, messages and the UI: a tool's name in a decision (its server's is narrower still) and a
 * session's purpose (which may be empty).
 */
export const TEXT_PATTERN = `^[^${UNSAFE}]*$`;
/**
 * What a field with TEXT_PATTERN accepts, for its schema description (a 400 for the pattern quotes the
 * description). Operators' reasons and notes, key descriptions and an agent's client name are such
 * fields: they are quoted in denials, alerts, audit rows and the CLI's one-line-per-item output.
 */
export const ONE_LINE = 'One line: no line breaks, control characters (ESC ...), line or paragraph separators, or bidirectional marks, embeddings, overrides or isolates.';
const ALLOWED_CHARACTERS = new RegExp(NAME_PATTERN, 'u');
const UNSAFE_CHARACTERS = new RegExp(`[${UNSAFE}]+`, 'gu');

// The same, except tab (U+0009) and line feed (U+000A).
const UNSAFE_BUT_LINES = new RegExp(`[${UNSAFE.replace('\\u0000-\\u001F', '\\u0000-\\u0008\\u000B-\\u001F')}]+`, 'gu');

/**
 * `text` with every run of the characters TEXT_PATTERN refuses made one space (for text a program passes
 * on, such as a client's purpose). With `keepLines`, for text that is multi-line by nature (an upstream's
 * error, a result summary): line feeds and tabs stay, CRLF becomes a line feed, and only the rest (ESC,
 * a lone CR, other controls, bidirectional marks, line and paragraph separators) is made a space.
 */
export function withoutUnsafeCharacters(text: string, opts: { keepLines?: boolean } = {}): string {
  if (opts.keepLines) return text.replace(/\r\n/g, '\n').replace(UNSAFE_BUT_LINES, ' ');
  return text.replace(UNSAFE_CHARACTERS, ' ');
}

const UNSAFE_CHARACTER = new RegExp(`[${UNSAFE}]`, 'gu');

/** `text` with each character TEXT_PATTERN refuses shown as its `\uXXXX` escape (for text shown in a terminal or a log line: seen, not obeyed). */
export function escapeUnsafeCharacters(text: string): string {
  return text.replace(UNSAFE_CHARACTER, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/**
 * A character that leaves a mark on screen. A name without one shows as an empty name in alerts and
 * audit rows, so "who did this" reads as nobody: whitespace (U+00A0, U+3000 ...), default-ignorable code
 * points (zero-width space and joiners U+200B–U+200D, U+2060, U+FEFF, soft hyphen, variation selectors,
 * Hangul fillers, tag characters), combining marks with no base, other format characters, lone
 * surrogates, and the blank Braille pattern U+2800 (which fonts draw as a space) do not count.
 */
const VISIBLE = /[^\p{White_Space}\p{Default_Ignorable_Code_Point}\p{M}\p{Cc}\p{Cf}\p{Cs}\u2800]/u;

export const NO_VISIBLE_CHARACTER = 'must contain at least one visible character';

/** Whether `text` has a character that leaves a mark on screen (see VISIBLE). */
export const hasVisibleCharacter = (text: string): boolean => VISIBLE.test(text);

/**
 * An operator's reason or note (a kill, a lift, a revocation, a resume, a grant, a rejection, an alert's
 * acknowledgement): TEXT_PATTERN, and at least one character that leaves a mark (VISIBLE). A reason of
 * spaces or zero-width characters is quoted in every denial a kill causes and in the audit trail as
 * nothing at all: the on-call engineer who reads it learns nothing. (Schemas compile with the u flag.)
 */
export const REASON_PATTERN = `^(?=[\\s\\S]*${VISIBLE.source})[^${UNSAFE}]*$`;
/** What a field with REASON_PATTERN accepts, for its schema description. */
export const REASON_TEXT = `At least one visible character (not only spaces or invisible ones). ${ONE_LINE}`;

/** What is wrong with a key name, in the words of a FieldProblem (field `name`), or undefined when it is fine. */
export function nameProblem(name: string): string | undefined {
  if (!VISIBLE.test(name)) return NO_VISIBLE_CHARACTER;
  if (!ALLOWED_CHARACTERS.test(name)) return 'must not contain control characters, line or paragraph separators, or bidirectional marks, embeddings, overrides or isolates';
  // Code points, as the route's maxLength counts them.
  if ([...name].length > NAME_MAX_LENGTH) return `must be at most ${NAME_MAX_LENGTH} characters`;
  return undefined;
}
