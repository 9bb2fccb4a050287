/** A shipped tool → scope map for one MCP server implementation. */
export interface ToolMap {
  /** The name a policy refers to with `map: <name>`. */
  name: string;
  /** Where the tool names were taken from (package and version checked). */
  source: string;
  /** Scope class a server using this map gets when the policy does not name one. */
  serverClass: string;
  /** Tool name → the exact scope it needs (a scope of src/tokens/scopes.ts). */
  tools: Readonly<Record<string, string>>;
  /**
   * Top-level argument names whose values are local paths (text or a list of text), for a server's
   * `paths.allowed` rule. Only maps of servers that take paths name them.
   */
  pathArguments?: readonly string[];
}
