import type { PipelineStep } from '../decisions/types.js';
import type { ToolRegistry } from './service.js';

/** DESIGN §4 step 3: a tool_hash other than the approved definition's → TOOL_CHANGED. */
export function createToolPinStep(registry: ToolRegistry): PipelineStep {
  return {
    name: 'tool-pin',
    run(ctx) {
      const hash = ctx.input.tool_hash;
      const server = ctx.call?.server ?? ctx.input.server;
      if (!hash) return undefined;
      const status = registry.statusOf(server, ctx.input.tool, hash);
      if (status === undefined || status === 'approved') return undefined;
      return {
        code: 'TOOL_CHANGED',
        message: `${server}/${ctx.input.tool} changed since it was approved (now ${hash.slice(0, 19)}…); an operator must review and approve the new definition (GET /v1/tools?status=pending, POST /v1/tools/:id/approve)`,
      };
    },
  };
}
