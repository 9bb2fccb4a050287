import type { ToolMap } from './types.js';

// mcp-server-fetch (Python, modelcontextprotocol/servers src/fetch) has one tool: an HTTP GET.
export const fetchMap: ToolMap = {
  name: 'fetch',
  source: 'mcp-server-fetch (PyPI)',
  serverClass: 'net',
  tools: {
    fetch: 'net:read',
  },
};
