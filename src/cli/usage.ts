import type { Command } from 'commander';

// Usage checks commander does not make. Imported by main.ts, so it stays light: commander's types only.

/**
 * Refuses an option that takes one value and is given twice (`kill --server github --server shell`):
 * commander keeps the last value silently, so the operator who meant both killed only the second. A
 * usage error (exit 2, with the command's help) naming the option, before the action runs and anything
 * is sent. The values are not printed: one may be a secret pasted by mistake (`--token <raw token>`).
 * Variadic options (`--project a b`) and the options named in `repeatable` (their parser collects every
 * value, as `audit verify --expect`) are left alone, as are flags without a value.
 */
export function refuseRepeatedOptions(cmd: Command, repeatable: ReadonlySet<string> = new Set()): void {
  for (const option of cmd.options) {
    if (!(option.required || option.optional) || option.variadic || repeatable.has(option.long ?? '')) continue;
    let given = false;
    cmd.on(`option:${option.name()}`, () => {
      if (given) cmd.error(`error: option '${option.flags}' was given more than once: it takes one value, and only the last would have been used`, { exitCode: 2, code: 'commander.optionRepeated' });
      given = true;
    });
  }
  for (const sub of cmd.commands) refuseRepeatedOptions(sub, repeatable);
}
