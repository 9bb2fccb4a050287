// Which AI client (IDE or agent) made a call, from the MCP client name and the user agent (seed 000
// US-008). Order matters: Cursor and Windsurf present themselves as VS Code derivatives, and
// "claude-code" must win over plain "claude".

const CLIENTS: ReadonlyArray<readonly [label: string, pattern: RegExp]> = [
  ['Claude Code', /claude[-_ ]?code|claude-cli/i],
  ['Claude Desktop', /claude[-_ ]?desktop|claude-ai|\bclaude\b/i],
  ['Cursor', /cursor/i],
  ['Windsurf', /windsurf|codeium/i],
  ['Zed', /\bzed\b/i],
  ['Cline', /\bcline\b|roo[-_ ]?code/i],
  ['Continue', /\bcontinue\b/i],
  ['GitHub Copilot', /copilot/i],
  ['VS Code', /visual studio code|vs ?code|\bcode\/\d/i],
  ['JetBrains', /jetbrains|intellij|pycharm|webstorm|goland/i],
  ['Goose', /\bgoose\b/i],
  ['ChatGPT', /chatgpt|openai/i],
  ['Gemini CLI', /gemini/i],
  ['MCP Inspector', /inspector/i],
];

export const UNKNOWN_CLIENT = 'unknown';

/** A display name such as "Claude Desktop", "Cursor" or "VS Code"; "unknown" when nothing matches. */
export function aiClientOf(client: { name?: string | undefined; user_agent?: string | undefined } | undefined): string {
  for (const text of [client?.name, client?.user_agent]) {
    if (!text) continue;
    for (const [label, pattern] of CLIENTS) if (pattern.test(text)) return label;
  }
  return UNKNOWN_CLIENT;
}
