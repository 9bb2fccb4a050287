import type { ToolMap } from './types.js';

// @modelcontextprotocol/server-postgres 0.6.2 has one tool, `query`, which runs inside a READ ONLY
// transaction: db:select.
export const postgresMap: ToolMap = {
  name: 'postgres',
  source: '@modelcontextprotocol/server-postgres@0.6.2',
  serverClass: 'db',
  tools: {
    query: 'db:select',
  },
};
