import { formatIssue, loadPolicyFile } from '../policy/index.js';

/**
 * `killswitch policy check FILE`: validates a policy file. Prints every problem as
 * `file:line:column key.path: message` on stderr and returns the exit code: 0 valid (warnings
 * allowed), 2 invalid or unreadable.
 */
export async function policyCheck(file: string, out: NodeJS.WritableStream = process.stdout, err: NodeJS.WritableStream = process.stderr): Promise<number> {
  const result = await loadPolicyFile(file);
  for (const issue of result.issues) (issue.severity === 'error' ? err : out).write(`${formatIssue(issue)}\n`);
  if (!result.ok) {
    const count = result.issues.filter((i) => i.severity === 'error').length;
    err.write(`${file}: invalid policy (${count} error${count === 1 ? '' : 's'})\n`);
    return 2;
  }
  const p = result.policy;
  const roles = [...p.roles.values()].filter((r) => !r.builtIn).length;
  out.write(`${file}: valid policy (${p.servers.size} servers, ${roles} roles, sha256 ${p.hash})\n`);
  return 0;
}
