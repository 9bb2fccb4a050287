// The policy module's public surface: what the decision pipeline, the flags sync, the limits step and
// the CLI call.
export { checkPolicy, scopeCheck } from './check.js';
export { policyFlagNames, serverFlagNames } from './flags.js';
export { formatIssue, PolicyFileError, type PolicyIssue, policyErrorCount } from './issues.js';
export { haltsToken, limitsFor } from './limits.js';
export { loadPolicyFile, type PolicyParseResult, parsePolicy } from './load.js';
export { SHIPPED_MAPS, type ToolMap } from './maps/index.js';
export { requiresApproval, resolveCall } from './resolve.js';
export { describeProductionHit, matchProductionPattern } from './resources.js';
export { type PolicyReloadEvent, type PolicyReloadListener, type PolicyStatus, PolicyStore, type PolicyStoreOptions, requirePolicyFile } from './store.js';
export type { CompiledPolicy, CompiledRole, CompiledServer, EffectiveLimits, ServerLimits } from './types.js';
