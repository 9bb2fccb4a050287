import { describe, expect, it } from 'vitest';
import { AGENT_PREFIXES, GATEWAY_PREFIX, generateCredential, OPERATOR_PREFIX, parseCredential } from '../../src/tokens/format.js';
import { DEFAULT_SCOPES, disallowedScopes, SCOPES } from '../../src/tokens/scopes.js';

describe('credential format', () => {
  it('round-trips every prefix with a valid checksum', () => {
    for (const [type, prefix] of Object.entries(AGENT_PREFIXES)) {
      const raw = generateCredential(prefix);
      expect(raw.startsWith(prefix)).toBe(true);
      expect(parseCredential(raw)).toEqual({ kind: 'agent', prefix, tokenType: type });
    }
    expect(parseCredential(generateCredential(GATEWAY_PREFIX))?.kind).toBe('gateway');
    expect(parseCredential(generateCredential(OPERATOR_PREFIX))?.kind).toBe('operator');
  });

  it('carries at least 128 bits of randomness and never repeats', () => {
    const seen = new Set<string>();
    for (let i = 0; i < 2000; i++) seen.add(generateCredential('mcp_ro_'));
    expect(seen.size).toBe(2000);
    // 22 base62 characters = 130.9 bits.
    const body = generateCredential('mcp_ro_').slice('mcp_ro_'.length, -6);
    expect(body.length * Math.log2(62)).toBeGreaterThanOrEqual(128);
  });

  it('rejects a single-character typo by checksum', () => {
    const raw = generateCredential('mcp_rw_');
    let rejected = 0;
    for (let i = 'mcp_rw_'.length; i < raw.length; i++) {
      const c = raw[i] === 'a' ? 'b' : 'a';
      if (parseCredential(raw.slice(0, i) + c + raw.slice(i + 1)) === undefined) rejected++;
    }
    expect(rejected).toBe(raw.length - 'mcp_rw_'.length);
  });

  it('rejects malformed input', () => {
    for (const bad of ['', 'mcp_ro_', 'mcp_xx_abc', 'Bearer x', `${generateCredential('mcp_ro_')}x`, 'mcp_ro_!!!!!!!!!!!!!!!!!!!!!!!!!!!!']) {
      expect(parseCredential(bad)).toBeUndefined();
    }
  });
});

describe('scopes', () => {
  it('default scopes per type are exactly seed 000 lists', () => {
    expect([...DEFAULT_SCOPES.ro].sort()).toEqual(['db:select', 'realtime:subscribe', 'storage:read']);
    expect([...DEFAULT_SCOPES.rw].sort()).toEqual(['db:insert', 'db:select', 'db:update', 'realtime:subscribe', 'storage:read', 'storage:write']);
    expect(DEFAULT_SCOPES.admin).toContain('db:delete');
    expect(DEFAULT_SCOPES.admin).toContain('secrets:read');
    expect(DEFAULT_SCOPES.admin).toContain('auth:*');
    expect(DEFAULT_SCOPES.ro.some((s) => s.startsWith('auth:'))).toBe(false);
    expect(DEFAULT_SCOPES.rw.some((s) => s.startsWith('auth:'))).toBe(false);
  });

  it('only admin may hold auth:* and delete scopes; ro only read scopes', () => {
    expect(disallowedScopes('rw', ['auth:*'])).toEqual(['auth:*']);
    expect(disallowedScopes('ro', ['storage:write', 'db:select'])).toEqual(['storage:write']);
    expect(disallowedScopes('admin', ['auth:*', 'db:delete'])).toEqual([]);
    expect(disallowedScopes('ro', ['made:up'])).toEqual(['made:up']);
    // Admin only: running commands, changing cloud infrastructure, reading secrets.
    expect(disallowedScopes('rw', ['exec:run', 'cloud:write', 'secrets:read'])).toEqual(['exec:run', 'cloud:write', 'secrets:read']);
    for (const s of SCOPES.filter((x) => x.capability === 'delete')) expect(s.allowedTypes).toEqual(['admin']);
  });
});
