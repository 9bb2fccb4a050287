import type { ToolMap } from './types.js';

// Tool names of @modelcontextprotocol/server-filesystem 2026.8.31 (dist/index.js registerTool calls).
// move_file renames inside the allowed directories: a write, not a delete (nothing is destroyed that the
// agent could not also overwrite with write_file).
export const filesystemMap: ToolMap = {
  name: 'filesystem',
  source: '@modelcontextprotocol/server-filesystem@2026.8.31',
  serverClass: 'storage',
  tools: {
    read_file: 'storage:read',
    read_text_file: 'storage:read',
    read_media_file: 'storage:read',
    read_multiple_files: 'storage:read',
    list_directory: 'storage:read',
    list_directory_with_sizes: 'storage:read',
    directory_tree: 'storage:read',
    search_files: 'storage:read',
    get_file_info: 'storage:read',
    list_allowed_directories: 'storage:read',
    write_file: 'storage:write',
    edit_file: 'storage:write',
    create_directory: 'storage:write',
    move_file: 'storage:write',
  },
  // Every path its tools take: `path` (most tools), `paths` (read_multiple_files), `source` and
  // `destination` (move_file).
  pathArguments: ['path', 'paths', 'source', 'destination'],
};
