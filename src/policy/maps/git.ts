import type { ToolMap } from './types.js';

// Tool names of mcp-server-git (Python, modelcontextprotocol/servers src/git, tests/snapshots/
// list_tools.json), plus git_commit_signed and git_init from other releases. git_reset only unstages
// (the working tree is kept): a write. Nothing here deletes history.
export const gitMap: ToolMap = {
  name: 'git',
  source: 'mcp-server-git (PyPI)',
  serverClass: 'vcs',
  tools: {
    git_status: 'vcs:read',
    git_diff_unstaged: 'vcs:read',
    git_diff_staged: 'vcs:read',
    git_diff: 'vcs:read',
    git_log: 'vcs:read',
    git_show: 'vcs:read',
    git_branch: 'vcs:read',
    git_commit: 'vcs:write',
    git_commit_signed: 'vcs:write',
    git_add: 'vcs:write',
    git_reset: 'vcs:write',
    git_create_branch: 'vcs:write',
    git_checkout: 'vcs:write',
    git_init: 'vcs:write',
  },
};
