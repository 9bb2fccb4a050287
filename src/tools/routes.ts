import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { type TSchema, Type } from 'typebox';
import { redactText } from '../audit/redact.js';
import { requireGateway, requireOperator } from '../http/auth.js';
import { ErrorBody, READ_ERRORS } from '../http/schemas.js';
import type { AgentPrincipal } from '../tokens/authenticator.js';
import { TEXT_PATTERN } from '../tokens/names.js';
import { IdParams, ReasonBody, Timestamp } from '../tokens/schemas.js';
import type { Capability } from '../tokens/scopes.js';
import { operatorActor } from '../tokens/service.js';
import { toolHash } from './hash.js';
import { MAX_TOOL_DESCRIPTION_LENGTH, MAX_TOOL_TITLE_LENGTH, MAX_TOOLS_PER_REPORTED_SERVER } from './limits.js';
import { ToolReportLimit } from './report-limit.js';
import { raiseToolChanged, raiseToolsAdded, raiseUpstreamMismatch, reportedNetworkIdentities, toolTarget } from './service.js';

const Nullable = <T extends TSchema>(t: T) => Type.Union([t, Type.Null()]);

const errors = { 400: ErrorBody, 401: ErrorBody, 403: ErrorBody, 404: ErrorBody, 409: ErrorBody };

// Standard hints are typed (readOnlyHint decides the scope of servers that trust annotations); any
// other annotation a vendor adds is accepted and hashed.
const ReportedAnnotations = Type.Object(
  {
    title: Type.Optional(Type.String({ maxLength: MAX_TOOL_TITLE_LENGTH })),
    readOnlyHint: Type.Optional(Type.Boolean()),
    destructiveHint: Type.Optional(Type.Boolean()),
    idempotentHint: Type.Optional(Type.Boolean()),
    openWorldHint: Type.Optional(Type.Boolean()),
  },
  { additionalProperties: true, description: 'The five standard MCP hints (typed) and any other annotation; all of them are hashed.' },
);

const ToolDef = Type.Object(
  {
    // As decisions' tool names: the name is pinned, listed, quoted in approvals and in the TOOL_CHANGED
    // alert, where a line break or a bidirectional override would forge text of its own.
    name: Type.String({
      minLength: 1,
      maxLength: 200,
      pattern: TEXT_PATTERN,
      description:
        'As the upstream lists it. No control characters (line breaks, ESC ...), line or paragraph separators, or bidirectional marks, embeddings, overrides or isolates: the whole report is refused with 400 naming the field, so leave such a tool out of the report (the reference gateway hides it).',
    }),
    title: Type.Optional(Type.String({ maxLength: MAX_TOOL_TITLE_LENGTH })),
    description: Type.Optional(Type.String({ maxLength: MAX_TOOL_DESCRIPTION_LENGTH })),
    inputSchema: Type.Optional(Type.Unknown()),
    outputSchema: Type.Optional(Type.Unknown()),
    annotations: Type.Optional(ReportedAnnotations),
    _meta: Type.Optional(Type.Record(Type.String(), Type.Unknown(), { description: 'Hashed: MCP extensions attach behaviour here (the UI a host renders, what it may call).' })),
    icons: Type.Optional(Type.Array(Type.Unknown(), { maxItems: 100, description: 'Stored as first reported, not hashed: pictures for a human UI, never shown to the model.' })),
    // The form is checked with the match (src/tools/service.ts), not by a schema pattern: a refused hash
    // then names the hash the control plane computed, as canonical JSON is easy to get wrong.
    hash: Type.Optional(
      Type.String({
        maxLength: 200,
        description:
          "The gateway's own hash of the definition (`sha256:` and 64 lowercase hex digits; src/tools/hash.ts); when given it must match, or the whole report is refused with 400 naming the hash the control plane computed.",
      }),
    ),
  },
  {
    additionalProperties: true,
    description:
      'An MCP tool definition as the upstream lists it (pass it through verbatim). Every field except `hash` and `icons` is hashed and pinned, fields this version does not name too (`execution`, vendor fields). A string holding NUL or an unpaired UTF-16 surrogate cannot be stored: the whole report is refused with 400 naming the field.',
  },
);

const ReportBody = Type.Object(
  {
    servers: Type.Array(
      Type.Object(
        {
          name: Type.String({ minLength: 1, maxLength: 200, pattern: '^[A-Za-z0-9._-]+$', description: 'Server name as in the policy file.' }),
          identity: Type.Object(
            { url: Type.Optional(Type.String({ maxLength: 2000 })), command: Type.Optional(Type.String({ maxLength: 2000 })), args: Type.Optional(Type.Array(Type.String({ maxLength: 2000 }), { maxItems: 100 })) },
            {
              additionalProperties: false,
              description:
                "How the gateway runs the upstream. Stored and shown with credentials masked (URLs without user, password, query or fragment, secret-named key=value pairs, the value after a flag like --token, recognisable tokens); not hashed. Its network identities (the host of `url`, hosts and database names of connection strings in `args`, read before masking) are kept per gateway key and server (the last report wins): decisions through this gateway match them against the environment's production patterns beside the policy's identity of the server (ENVIRONMENT_FORBIDDEN, halting PRODUCTION_ENVIRONMENT), and ones the policy's identity does not name raise an UPSTREAM_MISMATCH alert.",
            },
          ),
          tools: Type.Array(ToolDef, { maxItems: MAX_TOOLS_PER_REPORTED_SERVER }),
        },
        { additionalProperties: false },
      ),
      { maxItems: 100, description: 'Each upstream: `name` (as in the policy), `identity` (`url`, or `command` and `args`; stored and shown masked; its hosts and databases count for the production patterns) and `tools` (MCP definitions, verbatim; all fields but `hash` and `icons` hashed).' },
    ),
  },
  { additionalProperties: false },
);

const ToolRow = Type.Object({
  id: Type.String(),
  server: Type.String(),
  tool: Type.String(),
  hash: Type.String(),
  definition: Type.Unknown(),
  status: Type.String(),
  upstream_identity: Type.Unknown({ description: 'The identity reported with this definition first, credentials masked.' }),
  first_seen_at: Timestamp,
  last_reported_at: Type.Unsafe<Date | string>({
    type: 'string',
    format: 'date-time',
    description: 'When a gateway last reported this definition after another one of its tool. A decision without tool_hash is judged by the definition its own gateway reported last (`reported_last_by`), not by this.',
  }),
  decided_at: Type.Union([Timestamp, Type.Null()]),
  decided_by: Type.Union([Type.String(), Type.Null()]),
  decision_reason: Type.Union([Type.String(), Type.Null()]),
  reported_by: Type.Optional(
    Type.Object(
      {
        gateway_id: Nullable(Type.String()),
        gateway_name: Nullable(Type.String()),
        token_id: Nullable(Type.String({ description: 'The agent token the report was made with (null for definitions stored before migration 0012).' })),
        project_id: Nullable(Type.String()),
      },
      { description: 'Who reported this definition first (GET /v1/tools only): the gateway key and the agent token of the report that stored it. For a pending definition, who reported the change.' },
    ),
  ),
  reported_last_by: Type.Optional(
    Type.Array(
      Type.Object({ gateway_id: Type.String(), gateway_name: Nullable(Type.String()), token_id: Nullable(Type.String()), project_id: Nullable(Type.String()), reported_at: Timestamp }),
      {
        description:
          "The gateways whose last report of this tool is this definition (GET /v1/tools only), with the agent token and project of the report that made it theirs, and since when. Their calls without tool_hash are judged by it; other gateways' calls are not.",
      },
    ),
  ),
});

/** What a gateway sends with the decision of a protocol read (src/gateway/agent-session.ts). */
const PROTOCOL_READ_ANNOTATIONS = { readOnlyHint: true } as const;

const ProtocolReadVerdict = (method: string, description: string) =>
  Type.Object(
    {
      callable: Type.Boolean(),
      reason: Type.Optional(Type.String({ description: `Why a \`${method}\` of this token is denied whatever it asks for.` })),
    },
    { description },
  );

/** Gateway tool reports and the operator's review of changed tool definitions. */
export const toolRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const { ctx } = app;
  const gateway = requireGateway(ctx.auth);
  // The policy's limit; where it names none, TOOL_REPORTS_MAX_PER_MINUTE.
  const reportLimit = new ToolReportLimit(ctx.redis, () => {
    const max = ctx.policy.current().limits.token.maxToolReportsPerMinute;
    return max === undefined ? ctx.config.toolReportsMaxPerMinute : max;
  });

  /** Whether the token may ever make a protocol read (a gateway decides resources/read and prompts/get as reads). */
  const protocolRead = (agent: AgentPrincipal, server: string, method: 'resources/read' | 'prompts/get', identities: readonly string[]) => {
    const verdict = ctx.callability.mayEverCall(agent, server, method, PROTOCOL_READ_ANNOTATIONS, identities);
    return verdict.callable ? { callable: true } : { callable: false, reason: verdict.reason };
  };

  app.post(
    '/v1/gateway/tools',
    {
      onRequest: gateway,
      schema: {
        operationId: 'reportTools',
        tags: ['gateway'],
        summary: 'Report upstream servers and tool definitions; returns which tools are approved, changed, and callable by this token',
        description:
          'Pass each upstream tool definition through verbatim: `_meta`, `icons`, `outputSchema`, any annotation and fields this version does not name are accepted, and every field but `hash` and `icons` is hashed and pinned (docs/gateway.md, "Writing your own gateway"). The whole report is checked before anything is stored: a wrong `hash`, or a string that cannot be stored (NUL, an unpaired UTF-16 surrogate) anywhere in it, answers 400 naming the field and pins nothing. Identities are stored and shown with credentials masked; their network identities (hosts and database names, read before masking) are kept per gateway key and server, the last report winning, and decisions through this gateway match them against the production patterns beside the policy\'s identity of the server (ENVIRONMENT_FORBIDDEN, halting PRODUCTION_ENVIRONMENT); ones the policy\'s identity does not name raise an UPSTREAM_MISMATCH alert. Only reported tools are pinned: a decision for a tool no gateway reported is not checked against a definition; send `tool_hash` with each decision. Reports are counted per agent token: more than the policy\'s `rate_limits.per_token.max_tool_reports_per_minute` (else TOOL_REPORTS_MAX_PER_MINUTE, 60) in a minute answer 429 TOO_MANY_TOOL_REPORTS with `Retry-After`, and one Redis cannot count is refused (503).',
        security: [{ bearer: [], agentToken: [] }],
        body: ReportBody,
        response: {
          200: Type.Object({
            servers: Type.Array(
              Type.Object({
                name: Type.String(),
                in_policy: Type.Boolean(),
                tools: Type.Array(
                  Type.Object({
                    name: Type.String(),
                    hash: Type.String(),
                    status: Type.String({
                      description:
                        'approved (pinned), changed (waits for an operator), rejected (an operator refused it; `reason` says who and why), or refused: the name is an MCP protocol method (resources/read, prompts/get), the definition is not stored and is never callable',
                    }),
                    callable: Type.Boolean({ description: 'This token may call this exact definition (server, name and hash); show the tool only then.' }),
                    capability: Type.Optional(
                      Type.Union([Type.Literal('read'), Type.Literal('write'), Type.Literal('delete'), Type.Null()], {
                        description:
                          "What a call needs (its required scope's action), null when the policy does not resolve the tool. A session declared read-only halts on any call that is not `read` (WRITE_IN_READ_SESSION): hide those there too, and the tools of servers the session did not declare.",
                      }),
                    ),
                    reason: Type.Optional(Type.String({ description: 'Why it is not callable; for a changed or rejected definition, its id to approve (POST /v1/tools/:id/approve).' })),
                  }),
                ),
                resources: ProtocolReadVerdict(
                  'resources/read',
                  'Whether this token may read resources of this server (the decision of a `resources/read`, a read): list its resources and resource templates to the agent only then.',
                ),
                prompts: ProtocolReadVerdict('prompts/get', 'Whether this token may get prompts of this server (the decision of a `prompts/get`, a read): list its prompts to the agent only then.'),
              }),
            ),
          }),
          429: ErrorBody,
          ...errors,
        },
      },
    },
    async (req) => {
      const agent = req.agent!;
      // Before any work: a report over the token's limit (an agent listing in a loop) costs one Redis trip.
      await reportLimit.consume(agent.id);
      const results = await ctx.tools.report({ gatewayId: req.gateway!.id, tokenId: agent.id, projectId: agent.projectId }, req.body.servers);
      // Awaited (it never rejects), so the next report of the same gateway finds the alert to update.
      for (const r of results.filter((x) => x.newlyChanged)) await raiseToolChanged(ctx.alerts, r).catch(() => {});
      const added = results
        .filter((r) => r.added)
        .map((result) => {
          const def = req.body.servers.find((s) => s.name === result.server)?.tools.find((d) => toolHash(d) === result.hash);
          return { result, capability: ctx.callability.mayEverCall(agent, result.server, result.tool, def?.annotations).capability };
        });
      await raiseToolsAdded(ctx.alerts, added, req.gateway!).catch(() => {});
      const policy = ctx.policy.current();
      // What each server reaches, as the gateway runs it: for the mismatch alert and each tool's callability.
      const identities = req.body.servers.map((s) => reportedNetworkIdentities(s.identity));
      for (const [i, s] of req.body.servers.entries()) {
        await raiseUpstreamMismatch(ctx.alerts, req.gateway!, s.name, identities[i]!, policy.servers.get(s.name)?.networkIdentities, s.identity).catch(() => {});
      }
      return {
        servers: req.body.servers.map((s, i) => {
          // By hash, not name: a report may hold two definitions of one name (the second is changed).
          const byHash = new Map(s.tools.map((t) => [toolHash(t), t]));
          return {
            name: s.name,
            in_policy: ctx.callability.knowsServer(s.name),
            resources: protocolRead(agent, s.name, 'resources/read', identities[i]!),
            prompts: protocolRead(agent, s.name, 'prompts/get', identities[i]!),
            tools: results
              .filter((r) => r.server === s.name)
              .map((r) => {
                if (r.refusal) return { name: r.tool, hash: r.hash, status: r.status, callable: false, capability: null, reason: r.refusal };
                const def = byHash.get(r.hash);
                const verdict = ctx.callability.mayEverCall(agent, s.name, r.tool, def?.annotations, identities[i]);
                const out: { name: string; hash: string; status: string; callable: boolean; capability: Capability | null; reason?: string } = {
                  name: r.tool,
                  hash: r.hash,
                  status: r.status,
                  callable: verdict.callable && r.status === 'approved',
                  capability: verdict.capability,
                };
                if (!verdict.callable) out.reason = verdict.reason;
                else if (r.notApproved) out.reason = r.notApproved;
                return out;
              }),
          };
        }),
      };
    },
  );

  // Tool definitions are shared by every project: keys limited to projects neither see nor decide them
  // (as in the approvals queue).
  const viewer = requireOperator(ctx.auth, 'viewer', { allProjects: true });
  const operator = requireOperator(ctx.auth, 'operator', { allProjects: true });
  app.get(
    '/v1/tools',
    {
      onRequest: viewer,
      schema: {
        operationId: 'listToolDefinitions',
        tags: ['tools'],
        summary: 'Tool definitions, newest first, a page at a time (pending = changed and waiting for approval; at most one per tool)',
        querystring: Type.Object(
          {
            status: Type.Optional(Type.Union([Type.Literal('approved'), Type.Literal('pending'), Type.Literal('rejected'), Type.Literal('superseded')])),
            server: Type.Optional(Type.String()),
            limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 500, default: 100 })),
            cursor: Type.Optional(Type.String({ format: 'uuid', description: 'The `next_cursor` of the previous page.' })),
          },
          { additionalProperties: false },
        ),
        response: { 200: Type.Object({ tools: Type.Array(ToolRow), next_cursor: Nullable(Type.String({ description: 'Pass as `cursor` for the next (older) page; null on the last page.' })) }), ...READ_ERRORS },
      },
    },
    // Reasons decided before they were stored masked are masked where they are listed.
    async (req) => {
      const page = await ctx.tools.listWithReporters({ ...req.query, limit: req.query.limit ?? 100 });
      return { ...page, tools: page.tools.map((r) => (r.decision_reason === null ? r : { ...r, decision_reason: redactText(r.decision_reason) })) };
    },
  );
  for (const verb of ['approve', 'reject'] as const) {
    app.post(
      `/v1/tools/:id/${verb}`,
      {
        onRequest: operator,
        schema: {
          operationId: verb === 'approve' ? 'approveToolDefinition' : 'rejectToolDefinition',
          tags: ['tools'],
          summary: verb === 'approve' ? 'Approve a changed (pending), rejected or superseded tool definition; the one approved before is superseded' : 'Reject a changed (pending) tool definition, or take back the trust of an approved one; calls to it answer TOOL_CHANGED, naming who rejected it and why',
          params: IdParams,
          body: ReasonBody,
          response: { 200: ToolRow, ...errors, 503: ErrorBody },
        },
      },
      async (req) => {
        // Stored as decision_reason, listed, and quoted to agents in TOOL_CHANGED: a credential pasted
        // into it is masked as in the audit trail (as a decision through /v1/approvals is).
        const reason = redactText(req.body.reason);
        const row = await ctx.tools.decide(req.params.id, verb === 'approve' ? 'approved' : 'rejected', operatorActor(req.operator!), reason);
        // Awaited like the same decision through /v1/approvals: when neither Postgres nor the spool takes
        // the row, the decision stands but the operator is answered 503, not told it was recorded.
        await ctx.audit.recordAdmin({ actor: req.operator!, action: `tool.${verb}`, target: toolTarget(row.server, row.tool), details: { id: row.id, hash: row.hash, reason } });
        return row;
      },
    );
  }
};
