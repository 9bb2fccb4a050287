import { appendFileSync } from 'node:fs';

// A stdio MCP server for the gateway's protocol conformance tests (gateway-conformance.test.ts): it uses
// the parts of MCP the reference servers do not, and writes one JSON line per thing it saw to
// CONF_UPSTREAM_SEEN (a file), so a test can tell what reached it.
//
// - tools/list in three pages (nextCursor "page-2", "page-3"), read-only tools:
//   `echo` (page 1), `report` (page 2: outputSchema, answers structuredContent),
//   `progress` (page 3: a progress notification on the request's progress token, and a log message,
//   each carrying the text "upstream-progress-secret", then its result),
//   `ask_client` (page 3: sends the client the request its `method` argument names: sampling/createMessage,
//   elicitation/create or roots/list; answers with what came back, or the error); with
//   CONF_UPSTREAM_LONG_TOOL=N also a tool named N times "l"; with CONF_UPSTREAM_ENDLESS_PAGES=1 the pages
//   never end: after page-3 come "more-1", "more-2", ..., each with one tool `more_N` and the next cursor.
// - resources (with subscribe), logging and completions capabilities; resources/subscribe,
//   logging/setLevel and completion/complete are recorded when they arrive.

const seenFile = process.env['CONF_UPSTREAM_SEEN'];
const seen = (what) => {
  if (seenFile) appendFileSync(seenFile, `${JSON.stringify(what)}\n`);
};

const { Server } = await import('@modelcontextprotocol/sdk/server/index.js');
const { StdioServerTransport } = await import('@modelcontextprotocol/sdk/server/stdio.js');
const {
  CallToolRequestSchema,
  CompleteRequestSchema,
  CreateMessageResultSchema,
  ElicitResultSchema,
  ListResourcesRequestSchema,
  ListRootsResultSchema,
  ListToolsRequestSchema,
  ReadResourceRequestSchema,
  SetLevelRequestSchema,
  SubscribeRequestSchema,
} = await import('@modelcontextprotocol/sdk/types.js');

const server = new Server({ name: 'conformance-upstream', version: '1.0.0' }, { capabilities: { tools: {}, resources: { subscribe: true }, logging: {}, completions: {} } });
const object = (properties = {}) => ({ type: 'object', properties });
const read = { readOnlyHint: true };
const pages = {
  '': { tools: [{ name: 'echo', description: 'echo (conformance)', inputSchema: object({ text: { type: 'string' } }), annotations: read }], nextCursor: 'page-2' },
  'page-2': {
    tools: [
      {
        name: 'report',
        description: 'a structured report (conformance)',
        inputSchema: object(),
        outputSchema: object({ count: { type: 'number' }, label: { type: 'string' } }),
        annotations: read,
      },
    ],
    nextCursor: 'page-3',
  },
  'page-3': {
    tools: [
      { name: 'progress', description: 'reports progress (conformance)', inputSchema: object(), annotations: read },
      { name: 'ask_client', description: 'asks the client (conformance)', inputSchema: object({ method: { type: 'string' } }), annotations: read },
      // CONF_UPSTREAM_LONG_TOOL=N: also a tool whose name is N characters long (a valid name up to 128).
      ...(process.env['CONF_UPSTREAM_LONG_TOOL']
        ? [{ name: 'l'.repeat(Number(process.env['CONF_UPSTREAM_LONG_TOOL'])), description: 'a long name (conformance)', inputSchema: object(), annotations: read }]
        : []),
    ],
  },
};
server.setRequestHandler(ListToolsRequestSchema, async (req) => {
  const cursor = req.params?.cursor ?? '';
  seen({ method: 'tools/list', cursor });
  const endless = process.env['CONF_UPSTREAM_ENDLESS_PAGES'] === '1';
  const more = /^more-(\d+)$/.exec(cursor);
  if (endless && more) {
    const n = Number(more[1]);
    return { tools: [{ name: `more_${n}`, description: 'one more page (conformance)', inputSchema: object(), annotations: read }], nextCursor: `more-${n + 1}` };
  }
  const page = pages[cursor];
  if (!page) throw new Error(`unknown cursor ${cursor}`);
  return endless && cursor === 'page-3' ? { ...page, nextCursor: 'more-1' } : page;
});
const text = (t) => ({ content: [{ type: 'text', text: t }] });
const schemas = { 'sampling/createMessage': CreateMessageResultSchema, 'elicitation/create': ElicitResultSchema, 'roots/list': ListRootsResultSchema };
const requestParams = {
  'sampling/createMessage': { messages: [{ role: 'user', content: { type: 'text', text: 'upstream asks the model' } }], maxTokens: 10 },
  'elicitation/create': { message: 'upstream asks the user', requestedSchema: { type: 'object', properties: { answer: { type: 'string' } } } },
  'roots/list': {},
};
server.setRequestHandler(CallToolRequestSchema, async (req, extra) => {
  const name = req.params.name;
  seen({ method: 'tools/call', name, progressToken: req.params._meta?.progressToken ?? null });
  switch (name) {
    case 'echo':
      return text(String(req.params.arguments?.['text'] ?? ''));
    case 'report':
      return { content: [{ type: 'text', text: '{"count":3,"label":"three"}' }], structuredContent: { count: 3, label: 'three' } };
    case 'progress': {
      const token = req.params._meta?.progressToken;
      if (token !== undefined) await extra.sendNotification({ method: 'notifications/progress', params: { progressToken: token, progress: 1, total: 2, message: 'upstream-progress-secret' } });
      await extra.sendNotification({ method: 'notifications/message', params: { level: 'error', logger: 'conformance', data: 'upstream-log-secret' } });
      return text('progress done');
    }
    case 'ask_client': {
      const method = String(req.params.arguments?.['method'] ?? '');
      try {
        const answer = await extra.sendRequest({ method, params: requestParams[method] }, schemas[method], { timeout: 5_000 });
        seen({ method: 'ask_client', asked: method, answer });
        return text(`answered: ${JSON.stringify(answer)}`);
      } catch (err) {
        seen({ method: 'ask_client', asked: method, error: err.message, code: err.code ?? null });
        return text(`refused: ${err.code ?? ''} ${err.message}`);
      }
    }
    default:
      throw new Error(`unknown tool ${name}`);
  }
});
server.setRequestHandler(ListResourcesRequestSchema, async () => ({ resources: [{ uri: 'conf://secret', name: 'secret' }] }));
server.setRequestHandler(ReadResourceRequestSchema, async (req) => {
  seen({ method: 'resources/read', uri: req.params.uri });
  return { contents: [{ uri: req.params.uri, text: 'conformance-resource-secret' }] };
});
server.setRequestHandler(SubscribeRequestSchema, async (req) => {
  seen({ method: 'resources/subscribe', uri: req.params.uri });
  return {};
});
server.setRequestHandler(SetLevelRequestSchema, async (req) => {
  seen({ method: 'logging/setLevel', level: req.params.level });
  return {};
});
server.setRequestHandler(CompleteRequestSchema, async (req) => {
  seen({ method: 'completion/complete', ref: req.params.ref });
  return { completion: { values: ['conformance-completion-secret'] } };
});
await server.connect(new StdioServerTransport());
