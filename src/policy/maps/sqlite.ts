import type { ToolMap } from './types.js';

// Tool names of mcp-server-sqlite (Python, modelcontextprotocol/servers-archived). write_query runs any
// INSERT / UPDATE / DELETE statement: mapped to db:update so rw tokens can write; map it to db:delete in
// the policy (`tools: { write_query: db:delete }`) to keep deletes for admin tokens. create_table is DDL
// that adds an object: db:update. append_insight adds to the server's memo: db:insert.
export const sqliteMap: ToolMap = {
  name: 'sqlite',
  source: 'mcp-server-sqlite 0.6.x (PyPI)',
  serverClass: 'db',
  tools: {
    read_query: 'db:select',
    list_tables: 'db:select',
    describe_table: 'db:select',
    write_query: 'db:update',
    create_table: 'db:update',
    append_insight: 'db:insert',
  },
};
