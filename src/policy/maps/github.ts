import type { ToolMap } from './types.js';

// Tool names of @modelcontextprotocol/server-github 2025.4.8 (the reference server; GitHub's own
// github-mcp-server uses other names and needs its own map). It has no delete or user-management tool;
// search_users only reads public profiles.
export const githubMap: ToolMap = {
  name: 'github',
  source: '@modelcontextprotocol/server-github@2025.4.8',
  serverClass: 'vcs',
  tools: {
    get_file_contents: 'vcs:read',
    get_issue: 'vcs:read',
    get_pull_request: 'vcs:read',
    get_pull_request_comments: 'vcs:read',
    get_pull_request_files: 'vcs:read',
    get_pull_request_reviews: 'vcs:read',
    get_pull_request_status: 'vcs:read',
    list_commits: 'vcs:read',
    list_issues: 'vcs:read',
    list_pull_requests: 'vcs:read',
    search_code: 'vcs:read',
    search_issues: 'vcs:read',
    search_repositories: 'vcs:read',
    search_users: 'vcs:read',
    add_issue_comment: 'vcs:write',
    create_branch: 'vcs:write',
    create_issue: 'vcs:write',
    create_or_update_file: 'vcs:write',
    create_pull_request: 'vcs:write',
    create_pull_request_review: 'vcs:write',
    create_repository: 'vcs:write',
    fork_repository: 'vcs:write',
    merge_pull_request: 'vcs:write',
    push_files: 'vcs:write',
    update_issue: 'vcs:write',
    update_pull_request_branch: 'vcs:write',
  },
};
