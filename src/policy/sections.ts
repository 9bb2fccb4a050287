import { DEFAULT_HALT_TOKEN_ON, DEFAULT_LARGE_RESULT_BYTES } from './defaults.js';
import type { PolicyIssue } from './issues.js';

// A top-level section left out of the file takes its default, and most defaults allow more than a
// section written out (no prohibited capabilities, no approval rules, the default limits...). A file
// cut short (rewritten in place, read between two writes) is such a file and may still be valid YAML.
// So a reload that drops a section the policy in force had is refused: removing one on purpose is
// written out, in the form that means the same as leaving it out, or done by a restart.

/** The sections a reload may not drop, each with the explicit form that equals leaving it out. */
export const GUARDED_SECTIONS: Readonly<Record<string, string>> = {
  prohibited_capabilities: 'prohibited_capabilities: []',
  environments: 'environments: {}',
  rate_limits: 'rate_limits: {}',
  cascade: 'cascade: {}',
  large_result_bytes: `large_result_bytes: ${DEFAULT_LARGE_RESULT_BYTES}`,
  halt_token_on: `halt_token_on: [${DEFAULT_HALT_TOKEN_ON.join(', ')}]`,
  approvals: 'approvals: {}',
};

/** One error per guarded section that `before` (the file in force) has and `after` (a reload) does not. */
export function droppedSections(before: ReadonlySet<string>, after: ReadonlySet<string>, file: string): PolicyIssue[] {
  return Object.entries(GUARDED_SECTIONS)
    .filter(([key]) => before.has(key) && !after.has(key))
    .map(([key, explicit]) => ({
      severity: 'error',
      file,
      line: 1,
      column: 1,
      path: key,
      message: `missing, but the policy in force has it: a file still being written looks like this, so it is not taken. To remove the section on purpose, write it out as \`${explicit}\` (the same as leaving it out), or restart the control plane`,
    }));
}
