import { type AuditEvent, makeEvent } from '../audit/record.js';
import { redactValue } from '../audit/redact.js';
import type { AdminAction } from '../audit/rows.js';
import type { CallContext } from '../decisions/types.js';
import type { OperatorPrincipal } from '../tokens/authenticator.js';
import type { ApprovalRow } from './store.js';

// The approval chain in the audit trail, one APPROVAL row per step: requested (by the agent's call),
// approved / rejected (by an operator, with the reason), used (by the one call it allowed), expired.
// Every row names the approval as `target` (approval:<id>); the requested and used rows also carry the
// decision id of the call, so `GET /v1/audit?decision_id=` shows a decision with its approval step.

export const APPROVAL_KIND = 'APPROVAL';

export const approvalTarget = (id: string): string => `approval:${id}`;

function fromCall(call: CallContext, action: string, a: ApprovalRow, details: Record<string, unknown>): AuditEvent {
  const { agent, input } = call;
  return makeEvent({
    kind: APPROVAL_KIND,
    actor_type: 'mcp_token',
    actor_id: agent.id,
    decision_id: call.decisionId,
    token_id: agent.id,
    token_type: agent.tokenType,
    project_id: agent.projectId,
    environment: agent.environment,
    session_id: input.session_id,
    gateway_id: call.gateway.id,
    server: a.server,
    tool: a.tool,
    capability: a.capability,
    arguments: redactValue(input.arguments),
    action,
    target: approvalTarget(a.id),
    details: redactValue({ approval_id: a.id, arguments_hash: a.arguments_hash, rule: a.rule, expires_at: a.expires_at.toISOString(), ...details }) as Record<string, unknown>,
  });
}

export const requestedRow = (call: CallContext, a: ApprovalRow): AuditEvent => fromCall(call, 'approval.requested', a, { separate_approver: a.separate_approver });

export const usedRow = (call: CallContext, a: ApprovalRow): AuditEvent =>
  fromCall(call, 'approval.used', a, { approved_by: a.decided_by, requested_decision_id: a.requested_decision_id });

export const releasedRow = (call: CallContext, a: ApprovalRow): AuditEvent =>
  fromCall(call, 'approval.released', a, { reason: 'the call was denied after the approval was spent (its INTENT could not be recorded); the approval stands for a repeat' });

export function decidedAction(op: OperatorPrincipal, a: ApprovalRow): AdminAction {
  return {
    actor: op,
    kind: APPROVAL_KIND,
    action: a.state === 'approved' ? 'approval.approved' : 'approval.rejected',
    target: approvalTarget(a.id),
    projectId: a.project_id,
    sessionId: a.session_id,
    details: {
      approval_id: a.id,
      reason: a.reason,
      token_id: a.token_id,
      session_id: a.session_id,
      server: a.server,
      tool: a.tool,
      arguments_hash: a.arguments_hash,
      requested_decision_id: a.requested_decision_id,
      expires_at: a.expires_at.toISOString(),
    },
  };
}

export function expiredRow(a: ApprovalRow): AuditEvent {
  return makeEvent({
    kind: APPROVAL_KIND,
    actor_type: 'system',
    actor_id: 'approvals',
    token_id: a.token_id,
    project_id: a.project_id,
    environment: a.environment,
    session_id: a.session_id,
    server: a.server,
    tool: a.tool,
    capability: a.capability,
    action: 'approval.expired',
    target: approvalTarget(a.id),
    details: { approval_id: a.id, arguments_hash: a.arguments_hash, was: a.decided_at ? 'approved' : 'pending', requested_decision_id: a.requested_decision_id },
  });
}
