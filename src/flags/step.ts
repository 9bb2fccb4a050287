import type { CallContext, PipelineStep, StepResult } from '../decisions/types.js';
import type { FlagService } from './service.js';

// Step 4 of DESIGN.md §4: the Unleash flags for this call, and only those (evaluating every flag costs
// ~2 µs each). All must be on; the first one that is off denies with KILL_SWITCH naming it, with the
// flag's Unleash description as the reason. Every flag evaluated is recorded for the audit trail.

/** The part of FlagService the step needs (tests and benchmarks can pass the real service). */
export type FlagEvaluator = Pick<FlagService, 'isReady' | 'isEnabled' | 'isEnabledUncounted' | 'whyOff' | 'environment' | 'callContext'>;

/** The flags DESIGN.md §5 checks for a call, in order, without duplicates. */
export function flagsForCall(tokenType: string, server: string, capability: string, extraFlags: readonly string[]): string[] {
  const names = ['mcp.enabled', `mcp.tokens.${tokenType}`, `mcp.${server}.${capability}`];
  for (const f of extraFlags) if (!names.includes(f)) names.push(f);
  return names;
}

export function createFlagStep(flags: FlagEvaluator): PipelineStep {
  return {
    name: 'flags',
    dependency: 'The feature flags (Unleash)',
    run(ctx: CallContext): StepResult {
      if (!flags.isReady()) {
        return {
          code: 'DEPENDENCY_UNAVAILABLE',
          message: 'Unleash flags are not loaded yet (Unleash unreachable and no fresh backup); every call is denied until they are.',
        };
      }
      const call = ctx.call;
      if (!call) {
        // The policy step resolves the call first; without it we cannot know which flags apply.
        return { code: 'DEPENDENCY_UNAVAILABLE', message: 'The flag step ran before the call was resolved from the policy.' };
      }
      const agent = ctx.agent;
      const context = flags.callContext({
        userId: agent.id,
        sessionId: ctx.input.session_id,
        tokenType: agent.tokenType,
        role: agent.role,
        mcpEnvironment: agent.environment,
        projectId: agent.projectId,
        server: call.server,
        tool: call.tool,
        capability: call.capability,
      });
      let firstOff: string | undefined;
      for (const name of flagsForCall(agent.tokenType, call.server, call.capability, call.extraFlags)) {
        // Explain changes nothing, Unleash's usage metrics included: they count the calls agents made.
        const enabled = ctx.dryRun ? flags.isEnabledUncounted(name, context) : flags.isEnabled(name, context);
        if (enabled === undefined) {
          return {
            code: 'DEPENDENCY_UNAVAILABLE',
            message: `${name} cannot be evaluated without counting it in Unleash's usage metrics (unleash-client's internals changed), so explain cannot tell what a real call would get; denied to fail closed. A real call evaluates it as usual.`,
          };
        }
        ctx.flagsEvaluated.push({ name, enabled });
        if (!enabled && firstOff === undefined) firstOff = name;
      }
      if (firstOff === undefined) return undefined;
      const why = flags.whyOff(firstOff, context);
      return { code: 'KILL_SWITCH', message: offMessage(firstOff, why, flags.environment) };
    },
  };
}

function offMessage(name: string, why: ReturnType<FlagEvaluator['whyOff']>, environment: string): string {
  const reason = why.description?.trim() || 'no description in Unleash';
  switch (why.reason) {
    case 'missing':
      return `${name} is off: the flag does not exist in Unleash (environment ${environment}); a missing flag denies. It was deleted or archived in Unleash, or never created: if that was on purpose, leave it. Otherwise "npm run flags:sync" creates it (ON only if Unleash never had it; a deleted one comes back OFF, an archived one stays archived until revived), then turn it on in Unleash if intended.`;
    case 'webhook':
      return `${name} is off: ${reason} (turned off in Unleash; applied at once from its webhook)`;
    case 'constraints':
      return `${name} is off for this call: ${reason} (its Unleash strategy constraints exclude this token, role, environment or server)`;
    case 'not-ready':
      return `${name} is off: Unleash flags are not loaded`;
    default:
      return `${name} is off: ${reason}`;
  }
}
