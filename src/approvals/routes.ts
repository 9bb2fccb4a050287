import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import { requireGateway, requireOperator } from '../http/auth.js';
import { ErrorBody, READ_ERRORS } from '../http/schemas.js';
import { ApprovalIdParams, ApprovalItem, ApprovalStatusSchema, DecideBody, ListApprovalsQuery } from './schemas.js';

const errors = { 400: ErrorBody, 401: ErrorBody, 403: ErrorBody, 404: ErrorBody, 409: ErrorBody, 503: ErrorBody };
const tags = ['approvals'];

/** The operator's approval queue (calls and changed tool definitions) and the gateway's status poll. */
export const approvalRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const { ctx } = app;
  const viewer = requireOperator(ctx.auth, 'viewer');
  const operator = requireOperator(ctx.auth, 'operator');

  app.get(
    '/v1/approvals',
    {
      onRequest: viewer,
      schema: {
        operationId: 'listApprovals',
        tags,
        summary: 'The approval queue: tool calls waiting for a human and changed tool definitions, newest first',
        querystring: ListApprovalsQuery,
        response: { 200: Type.Object({ approvals: Type.Array(ApprovalItem) }), ...READ_ERRORS },
      },
    },
    async (req) => ({ approvals: await ctx.approvals.list(req.operator!, req.query) }),
  );

  app.get(
    '/v1/approvals/:id',
    { onRequest: viewer, schema: { operationId: 'getApproval', tags, summary: 'One approval with the full arguments it covers', params: ApprovalIdParams, response: { 200: ApprovalItem, ...READ_ERRORS, 404: ErrorBody } } },
    async (req) => ctx.approvals.get(req.operator!, req.params.id),
  );

  for (const verb of ['approve', 'reject'] as const) {
    app.post(
      `/v1/approvals/:id/${verb}`,
      {
        onRequest: operator,
        schema: {
          operationId: verb === 'approve' ? 'approveApprovalRequest' : 'rejectApprovalRequest',
          tags,
          summary:
            verb === 'approve'
              ? 'Approve: the identical call (same token, session, server, tool, arguments) may then run once within the window'
              : 'Reject: identical calls are refused with APPROVAL_REJECTED and the reason',
          params: ApprovalIdParams,
          body: DecideBody,
          response: { 200: ApprovalItem, ...errors },
        },
      },
      async (req) => ctx.approvals.decide(req.operator!, req.params.id, verb, req.body.reason, req.body.expires_in),
    );
  }

  const gateway = requireGateway(ctx.auth);

  app.get(
    '/v1/gateway/approvals/:id',
    {
      onRequest: gateway,
      schema: {
        operationId: 'getGatewayApproval',
        tags: ['gateway'],
        summary: 'State of an approval the agent asked for, for a gateway that waits for it (only the token that asked may read it)',
        security: [{ bearer: [], agentToken: [] }],
        params: ApprovalIdParams,
        response: { 200: ApprovalStatusSchema, ...READ_ERRORS, 404: ErrorBody },
      },
    },
    async (req) => ctx.approvals.status(req.agent!, req.params.id),
  );
};
