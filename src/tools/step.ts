import type { PipelineStep } from '../decisions/types.js';
import type { ToolRegistry } from './service.js';

/**
 * DESIGN §4 step 3: TOOL_CHANGED for a tool_hash other than the approved definition's, and for a call
 * without tool_hash while the definition of the tool that the calling gateway (its gateway key)
 * reported last is not approved (pending, rejected or superseded): leaving the hash out never skips
 * the check, and another gateway's report never decides it (ADR 0014). A tool the gateway never
 * reported passes while an approved definition exists. Explain runs without a gateway (dryRun): there a
 * call without tool_hash denies when any gateway's last report is not approved, naming the gateway.
 * DEPENDENCY_UNAVAILABLE for a reported tool while a change was announced that this replica could not
 * load (ToolRegistry.unavailable). All in memory: no round trip per call.
 */
export function createToolPinStep(registry: ToolRegistry): PipelineStep {
  return {
    name: 'tool-pin',
    run(ctx) {
      const server = ctx.call?.server ?? ctx.input.server;
      const stale = registry.unavailable(server, ctx.input.tool);
      if (stale !== undefined) return { code: 'DEPENDENCY_UNAVAILABLE', message: stale };
      const message = registry.denial(server, ctx.input.tool, ctx.input.tool_hash || undefined, ctx.dryRun ? undefined : ctx.gateway.id);
      return message === undefined ? undefined : { code: 'TOOL_CHANGED', message };
    },
  };
}
