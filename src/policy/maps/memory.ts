import type { ToolMap } from './types.js';

// Tool names of @modelcontextprotocol/server-memory 2026.8.31. The three delete_* tools destroy parts of
// the knowledge graph, so they need storage:delete (admin tokens only).
export const memoryMap: ToolMap = {
  name: 'memory',
  source: '@modelcontextprotocol/server-memory@2026.8.31',
  serverClass: 'storage',
  tools: {
    read_graph: 'storage:read',
    search_nodes: 'storage:read',
    open_nodes: 'storage:read',
    create_entities: 'storage:write',
    create_relations: 'storage:write',
    add_observations: 'storage:write',
    delete_entities: 'storage:delete',
    delete_observations: 'storage:delete',
    delete_relations: 'storage:delete',
  },
};
