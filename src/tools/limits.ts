// What one tool report (POST /v1/gateway/tools) may hold: the route's schema (routes.ts) and the
// report's own check (service.ts) refuse a whole report over any of these with 400, so the reference
// gateway (src/gateway/catalog.ts) hides a tool that would break one instead of sending it.

/** The most tool definitions one report may hold, all servers together; more is a 400 naming `servers`. */
export const MAX_TOOLS_PER_REPORT = 2_000;

/** The most tool definitions one server of a report may hold (`servers.N.tools`); more is a 400. */
export const MAX_TOOLS_PER_REPORTED_SERVER = 1_000;

/**
 * The most distinct tools one server may have pinned. A new tool name beyond it is answered `refused`
 * (not stored, never callable): an upstream that lists ever new names cannot grow the pins without bound.
 * Real servers list tens (github about 40).
 */
export const MAX_TOOLS_PER_SERVER = 500;

/** The longest `title` and `annotations.title` of a reported definition, in characters. */
export const MAX_TOOL_TITLE_LENGTH = 500;

/** The longest `description` of a reported definition, in characters. */
export const MAX_TOOL_DESCRIPTION_LENGTH = 20_000;
