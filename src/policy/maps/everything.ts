import type { ToolMap } from './types.js';

// @modelcontextprotocol/server-everything is the protocol test server. Its tool names changed in 2026
// (kebab-case, 2026.8.31) from the camelCase names of 2025 (checked in 2025.9.25); both are mapped so a
// pinned older version resolves too. get-env / printEnv return the server's environment variables,
// which usually hold credentials: secrets:read. Tools that change server state or create resources
// (toggles, gzip) are writes.
export const everythingMap: ToolMap = {
  name: 'everything',
  source: '@modelcontextprotocol/server-everything@2026.8.31 and @2025.9.25',
  serverClass: 'storage',
  tools: {
    echo: 'storage:read',
    'get-annotated-message': 'storage:read',
    'get-env': 'secrets:read',
    'get-resource-links': 'storage:read',
    'get-resource-reference': 'storage:read',
    'get-roots-list': 'storage:read',
    'get-structured-content': 'storage:read',
    'get-sum': 'storage:read',
    'get-tiny-image': 'storage:read',
    'gzip-file-as-resource': 'storage:write',
    'toggle-simulated-logging': 'storage:write',
    'toggle-subscriber-updates': 'storage:write',
    'trigger-long-running-operation': 'storage:read',
    'trigger-elicitation-request': 'storage:read',
    'trigger-elicitation-request-async': 'storage:read',
    'trigger-url-elicitation': 'storage:read',
    'trigger-sampling-request': 'storage:read',
    'trigger-sampling-request-async': 'storage:read',
    'simulate-research-query': 'storage:read',
    // 2025 names
    add: 'storage:read',
    longRunningOperation: 'storage:read',
    printEnv: 'secrets:read',
    sampleLLM: 'storage:read',
    getTinyImage: 'storage:read',
    annotatedMessage: 'storage:read',
    getResourceReference: 'storage:read',
    startElicitation: 'storage:read',
    getResourceLinks: 'storage:read',
    structuredContent: 'storage:read',
    listRoots: 'storage:read',
  },
};
