import type { CallContext, PipelineStep } from '../decisions/types.js';
import { scopeCheck } from '../policy/index.js';
import type { ApprovalNeed, ApprovalService } from './service.js';

/**
 * The two pipeline steps of approvals. `check` runs where DESIGN.md §4 puts approval-required tools
 * (after the policy rules): it answers APPROVAL_REQUIRED / _REJECTED / _EXPIRED / _USED, or lets an
 * approved call through without spending its approval. `use` runs after the Redis gate, so an approval
 * is spent only on a call that every other check allowed (a rate limit or a halted session does not
 * eat it), and is spent at most once across replicas.
 */
export function createApprovalSteps(approvals: ApprovalService): { check: PipelineStep; use: PipelineStep } {
  // What `check` found, for `use` of the same decision. Keyed by the call so nothing outlives it.
  const found = new WeakMap<CallContext, { need: ApprovalNeed; approvalId: string | undefined }>();
  return {
    check: {
      name: 'approval',
      dependency: 'The approval queue (Redis or Postgres)',
      async run(call) {
        const need = approvals.need(call);
        if (!need) return undefined;
        // Ask a human only about calls the token may make: the scopes step right after refuses the others.
        if (scopeCheck(call.agent, call.call!)) return undefined;
        if (call.dryRun) return approvals.explain(call, need);
        const result = await approvals.check(call, need);
        if (result.kind === 'deny') return result.denial;
        found.set(call, { need, approvalId: result.kind === 'approved' ? result.id : undefined });
        return undefined;
      },
    },
    use: {
      name: 'approval-use',
      dependency: 'The approval queue (Redis or Postgres)',
      async run(call) {
        const entry = found.get(call);
        if (!entry) return undefined;
        found.delete(call);
        if (entry.approvalId === undefined) {
          // Deferred to the gate (session unknown or halted) and yet the gate allowed: the session changed
          // in between. Never let an approval-required call through on that.
          return { code: 'APPROVAL_REQUIRED', message: `${call.input.server}/${call.input.tool} needs a human approval; the session changed while this call was checked, repeat it` };
        }
        return approvals.use(call, entry.need, entry.approvalId);
      },
    },
  };
}
