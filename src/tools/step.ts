import type { PipelineStep } from '../decisions/types.js';
import type { ToolRegistry } from './service.js';

/**
 * DESIGN §4 step 3: TOOL_CHANGED for a tool_hash other than the approved definition's, and for a call
 * without tool_hash while the definition of the tool reported last is not approved (pending, rejected
 * or superseded): leaving the hash out never skips the check. A tool no gateway reported passes.
 */
export function createToolPinStep(registry: ToolRegistry): PipelineStep {
  return {
    name: 'tool-pin',
    run(ctx) {
      const server = ctx.call?.server ?? ctx.input.server;
      const message = registry.denial(server, ctx.input.tool, ctx.input.tool_hash || undefined);
      return message === undefined ? undefined : { code: 'TOOL_CHANGED', message };
    },
  };
}
