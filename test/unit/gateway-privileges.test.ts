import { describe, expect, it } from 'vitest';
import { rootUpstreamWarning } from '../../src/gateway/privileges.js';

// Seed 002: MCP servers run as an unprivileged user. A gateway started as root starts its stdio
// upstreams as root; it says so at start.
const upstreams = [
  { name: 'filesystem', transport: 'stdio' as const },
  { name: 'postgres', transport: 'stdio' as const },
  { name: 'remote', transport: 'http' as const },
];

describe('rootUpstreamWarning', () => {
  it('as root with stdio upstreams: names the risk, the servers it starts, and what to do', () => {
    const warning = rootUpstreamWarning(0, upstreams);
    expect(warning).toContain('runs as root (uid 0)');
    expect(warning).toContain('(filesystem, postgres)');
    expect(warning).not.toContain('remote');
    expect(warning).toContain('unprivileged user');
    expect(warning).toContain('docs/gateway.md');
  });

  it('not root, no uid (Windows), or only Streamable HTTP upstreams (not started by the gateway): no warning', () => {
    expect(rootUpstreamWarning(1000, upstreams)).toBeUndefined();
    expect(rootUpstreamWarning(undefined, upstreams)).toBeUndefined();
    expect(rootUpstreamWarning(0, [{ name: 'remote', transport: 'http' }])).toBeUndefined();
  });
});
