// Seed 002 ("Privilege Escalation: MCP server runs with elevated permissions → run as unprivileged
// user"): the gateway starts its stdio upstreams as child processes with its own user, so a gateway
// started as root runs every local MCP server as root.

/**
 * The warning `killswitch gateway` logs at start when it runs as root and will start stdio upstreams;
 * undefined otherwise (another uid, no uid on this platform, or only Streamable HTTP upstreams, which it
 * does not start). `uid` is process.getuid?.(), injected for tests.
 */
export function rootUpstreamWarning(uid: number | undefined, upstreams: ReadonlyArray<{ name: string; transport: 'stdio' | 'http' }>): string | undefined {
  if (uid !== 0) return undefined;
  const started = upstreams.filter((u) => u.transport === 'stdio').map((u) => u.name);
  if (started.length === 0) return undefined;
  return (
    `killswitch gateway runs as root (uid 0), so the local MCP servers it starts (${started.join(', ')}) run as root too: ` +
    'a prompt-injected or compromised server, or one whose package was replaced, gets full control of this machine, ' +
    'beyond what the control plane decides (seed 002: run MCP servers as an unprivileged user). ' +
    'Run the gateway as an unprivileged user instead: a dedicated account (sudo -u, systemd User=), or in a container ' +
    'as a non-root user (docker run --user, or the project image, which runs as node); see docs/gateway.md, "Running as root".'
  );
}
