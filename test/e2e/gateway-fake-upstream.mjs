import { appendFileSync, existsSync } from 'node:fs';

// A stdio MCP server for what the reference servers cannot do on demand: answer with a message larger
// than the gateway reads, fail with a huge error message, hide rows inside objects, exit mid-call, and
// refuse to start again. It offers server-memory's read tool names, so the policy's memory map applies.
// `search_nodes` does what its query says: "huge:BYTES", "error:BYTES", "rows-object:N", "rows-agg:N",
// "rows-resource:N", "crash", "stderr:BYTES" (that many bytes on stderr, one line, then answers), "badprogress:BYTES" (a
// progress notification of that size for a token nobody asked for, then answers), "junk:LINES" (that many lines
// on stdout that are not JSON-RPC messages: `{}`, blank, stray text, then answers). The resource fake://table fails with a 3 MB error.
//
// Environment: FAKE_UPSTREAM_HOLD (a file: while it exists, the server exits at start, as a server that
// cannot come back would); FAKE_UPSTREAM_STARTS (a file that gets one line per start);
// FAKE_UPSTREAM_REFUSED (a file that gets one line per start refused because of the hold);
// FAKE_UPSTREAM_FLAP (a file: while it exists, the server initializes but exits when asked for tools/list,
// as one whose database is down would, writing the time in ms to FAKE_UPSTREAM_FLAPPED first);
// FAKE_UPSTREAM_EXTRA_TOOLS (comma-separated: tools/list also offers definitions a control plane refuses
// in a report: "huge" a 300,000-character description, "proto" a "__proto__" key in its input schema,
// "constructor" {"constructor": {"prototype": {}}} in it, "bulk" 60 tools of ~5 KB (300 KB in all),
// "many" 2,100 small tools); FAKE_UPSTREAM_PROMPTS (set: it offers prompts too, one: fake_prompt);
// FAKE_UPSTREAM_LIST_STALL (a file: while it exists, tools/list, resources/list, resources/templates/list
// and prompts/list are never answered); FAKE_UPSTREAM_LIST_ERROR (a file: while it exists, they answer
// a JSON-RPC error).
//
// Plain JavaScript, and the SDK imported only after the hold check: the reconnect tests start it dozens
// of times, and a start under tsx with the SDK loaded first took ~0.65 s here against ~0.1 s refused and
// ~0.35 s served.

const hold = process.env['FAKE_UPSTREAM_HOLD'];
if (hold && existsSync(hold)) {
  const refused = process.env['FAKE_UPSTREAM_REFUSED'];
  if (refused) appendFileSync(refused, `${process.pid}\n`);
  process.exit(3);
}
const starts = process.env['FAKE_UPSTREAM_STARTS'];
if (starts) appendFileSync(starts, `${process.pid}\n`);

const { Server } = await import('@modelcontextprotocol/sdk/server/index.js');
const { StdioServerTransport } = await import('@modelcontextprotocol/sdk/server/stdio.js');
const { CallToolRequestSchema, GetPromptRequestSchema, ListPromptsRequestSchema, ListResourcesRequestSchema, ListResourceTemplatesRequestSchema, ListToolsRequestSchema, ReadResourceRequestSchema } = await import(
  '@modelcontextprotocol/sdk/types.js'
);

const rows = (n) => Array.from({ length: n }, (_, i) => ({ id: i, email: `user${i}@example.com` }));
const text = (t) => ({ content: [{ type: 'text', text: t }] });

const prompts = process.env['FAKE_UPSTREAM_PROMPTS'] !== undefined;
const server = new Server({ name: 'fake-upstream', version: '1.0.0' }, { capabilities: { tools: {}, resources: {}, ...(prompts ? { prompts: {} } : {}) } });
const flap = process.env['FAKE_UPSTREAM_FLAP'];
const stall = process.env['FAKE_UPSTREAM_LIST_STALL'];
const listError = process.env['FAKE_UPSTREAM_LIST_ERROR'];
/** Every list waits here: never answered while the stall file exists, an error while the error file does. */
const listed = async (method) => {
  if (stall && existsSync(stall)) await new Promise(() => {});
  if (listError && existsSync(listError)) throw new Error(`${method} is broken: ${'e'.repeat(1000)}`);
};
const object = (properties = {}) => ({ type: 'object', properties });
const extraTools = {
  huge: () => [{ name: 'huge_description', description: 'h'.repeat(300_000), inputSchema: object() }],
  // Parsed from text, as a JSON-RPC message is: "__proto__" is then an ordinary own key of the schema.
  proto: () => [{ name: 'proto_schema', inputSchema: JSON.parse('{"type":"object","properties":{"x":{"type":"object","__proto__":{"polluted":true}}}}') }],
  constructor: () => [{ name: 'constructor_schema', inputSchema: JSON.parse('{"type":"object","properties":{"constructor":{"prototype":{}}}}') }],
  bulk: () => Array.from({ length: 60 }, (_, i) => ({ name: `bulk_${i}`, description: 'b'.repeat(5_000), inputSchema: object() })),
  many: () => Array.from({ length: 2_100 }, (_, i) => ({ name: `many_${i}`, inputSchema: object() })),
};
const extra = (process.env['FAKE_UPSTREAM_EXTRA_TOOLS'] ?? '')
  .split(',')
  .filter(Boolean)
  .flatMap((kind) => extraTools[kind]());
server.setRequestHandler(ListToolsRequestSchema, async () => {
  if (flap && existsSync(flap)) {
    const flapped = process.env['FAKE_UPSTREAM_FLAPPED'];
    if (flapped) appendFileSync(flapped, `${Date.now()}\n`);
    process.exit(4);
  }
  await listed('tools/list');
  return {
    tools: [
      ...['read_graph', 'search_nodes'].map((name) => ({
        name,
        description: `${name} (fake)`,
        inputSchema: object({ query: { type: 'string' } }),
        annotations: { readOnlyHint: true },
      })),
      ...extra,
    ],
  };
});
server.setRequestHandler(CallToolRequestSchema, async (req, extra) => {
  if (req.params.name === 'read_graph') return text('graph: Ada knows Grace');
  const query = String(req.params.arguments?.['query'] ?? '');
  const [what, n] = [query.split(':')[0], Number(query.split(':')[1] ?? 0)];
  switch (what) {
    case 'huge':
      return text('x'.repeat(n));
    case 'badprogress':
      // A progress notification for a token nobody asked for, BYTES long, with a credential in it.
      await extra.sendNotification({ method: 'notifications/progress', params: { progressToken: 'nobody-asked', progress: 1, message: `ghp_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789 ${'p'.repeat(n)}` } });
      return text('sent a stray progress notification');
    case 'junk': {
      const junk = ['{}', '', 'stray text'];
      const lines = Array.from({ length: n }, (_, i) => junk[i % junk.length]).join('\n');
      await new Promise((resolve) => process.stdout.write(`${lines}\n`, resolve));
      return text('wrote junk');
    }
    case 'stderr': {
      const chunk = 'x'.repeat(1 << 20);
      for (let left = n; left > 0; left -= chunk.length) process.stderr.write(left >= chunk.length ? chunk : chunk.slice(0, left));
      await new Promise((resolve) => process.stderr.write('\nstderr done\n', resolve));
      return text('wrote to stderr');
    }
    case 'error':
      throw new Error(`invalid input syntax for type integer: "${'e'.repeat(n)}"`);
    case 'rows-object':
      return text(JSON.stringify({ rows: rows(n) }));
    case 'rows-agg':
      return text(JSON.stringify([{ json_agg: rows(n) }]));
    case 'rows-resource':
      return { content: [{ type: 'resource', resource: { uri: 'fake://rows', mimeType: 'application/json', text: JSON.stringify(rows(n)) } }] };
    case 'crash':
      process.exit(1);
      break;
    default:
      return text(`no nodes match ${query}`);
  }
  return text('');
});
server.setRequestHandler(ListResourcesRequestSchema, async () => {
  await listed('resources/list');
  return { resources: [{ uri: 'fake://table', name: 'table' }] };
});
server.setRequestHandler(ListResourceTemplatesRequestSchema, async () => {
  await listed('resources/templates/list');
  return { resourceTemplates: [{ uriTemplate: 'fake://table/{row}', name: 'row' }] };
});
if (prompts) {
  server.setRequestHandler(ListPromptsRequestSchema, async () => {
    await listed('prompts/list');
    return { prompts: [{ name: 'fake_prompt', description: 'a prompt of the fake upstream' }] };
  });
  server.setRequestHandler(GetPromptRequestSchema, async () => ({ messages: [{ role: 'user', content: { type: 'text', text: 'fake prompt' } }] }));
}
server.setRequestHandler(ReadResourceRequestSchema, async () => {
  throw new Error(`could not read: ${'r'.repeat(3_000_000)}`);
});
await server.connect(new StdioServerTransport());
