import type { AppContext } from '../context.js';
import { ApprovalService } from './service.js';

export { approvalRoutes } from './routes.js';
export type { ApprovalNeed, ApprovalStatus, QueueItem, QueueQuery } from './service.js';
export { ApprovalService } from './service.js';
export { createApprovalSteps } from './step.js';

/** Builds and starts the approval service; needs ctx.tools (the queue lists changed tool definitions) and ctx.grants. */
export async function startApprovals(ctx: AppContext): Promise<ApprovalService> {
  const approvals = new ApprovalService({
    pool: ctx.pool,
    redis: ctx.redis,
    audit: ctx.audit,
    alerts: ctx.alerts,
    tools: ctx.tools,
    grants: ctx.grants,
    grantDefaultS: Math.min(3600, ctx.config.grantMaxSeconds),
    policy: () => ctx.policy.current(),
    log: ctx.log,
    now: ctx.clock.now,
    ttlS: ctx.config.approvalTtlS,
    maxPendingPerToken: ctx.config.approvalMaxPendingPerToken,
    onMissingEpoch: () => ctx.sessions.epoch.requestReload(),
  });
  // After a Redis restart or flush, approvals in force come back with halts and sessions, before the
  // state epoch lets decisions through again.
  ctx.sessions.epoch.registerLoader('approvals', async () => {
    await approvals.restore();
  });
  await approvals.start();
  ctx.closers.push(() => approvals.stop());
  return approvals;
}
