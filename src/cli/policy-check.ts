import { formatIssue, loadPolicyFile, policyErrorCount, serverFlagNames } from '../policy/index.js';

/**
 * `killswitch policy check FILE`: validates a policy file. Prints every problem as
 * `file:line:column key.path: message` on stderr (warnings on stdout) and returns the exit code: 0
 * valid (warnings allowed), 2 invalid or unreadable. A valid file is followed by the Unleash flags each
 * server's calls need per capability, seed 001 defaults included, so an operator sees which flag stops what.
 */
export async function policyCheck(file: string, out: NodeJS.WritableStream = process.stdout, err: NodeJS.WritableStream = process.stderr): Promise<number> {
  const result = await loadPolicyFile(file);
  for (const issue of result.issues) (issue.severity === 'error' ? err : out).write(`${formatIssue(issue)}\n`);
  if (!result.ok) {
    const count = policyErrorCount(result.issues, result.omittedErrors);
    err.write(`${file}: invalid policy (${count} error${count === 1 ? '' : 's'})\n`);
    return 2;
  }
  const p = result.policy;
  const roles = [...p.roles.values()].filter((r) => !r.builtIn).length;
  const n = (count: number, word: string) => `${count} ${word}${count === 1 ? '' : 's'}`;
  out.write(`${file}: valid policy (${n(p.servers.size, 'server')}, ${n(roles, 'role')}, sha256 ${p.hash})\n`);
  if (p.servers.size > 0) {
    out.write('Flags each server answers to, beside mcp.enabled and mcp.tokens.<type> (all must be on):\n');
    for (const s of [...p.servers.values()].sort((a, b) => a.name.localeCompare(b.name))) {
      const f = serverFlagNames(s);
      out.write(`  ${s.name}${s.prohibited ? ' (prohibited)' : ''}  read: ${f.read.join(', ')}; write: ${f.write.join(', ')}; delete: ${f.delete.join(', ')}\n`);
    }
  }
  return 0;
}
