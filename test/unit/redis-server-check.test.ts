import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { redisConnectionHint } from '../../src/redis/client.js';
import { redisAclRule, requiredRedisCommands } from '../../src/redis/server-check.js';

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? sources(join(dir, e.name)) : e.name.endsWith('.ts') ? [join(dir, e.name)] : []));
}

describe('what REDIS_URL\'s user must be allowed (docs/operations.md, "Managed Redis")', () => {
  it('every command a script of src/ calls is in the list the start checks and the ACL rule grants', () => {
    const called = new Set<string>();
    for (const file of sources('src')) {
      for (const m of readFileSync(file, 'utf8').matchAll(/redis\.p?call\(\s*['"]([A-Za-z]+)['"]/g)) called.add(m[1]!.toLowerCase());
    }
    expect(called.size).toBeGreaterThan(20);
    const required = new Set(requiredRedisCommands());
    expect([...called].filter((c) => !required.has(c))).toEqual([]);
  });

  it('the ACL rule: keys and channels under the prefix only, glob characters of the prefix escaped, no password unless given', () => {
    const rule = redisAclRule('ks-prod:');
    expect(rule).toMatch(/^on resetkeys ~ks-prod:\* resetchannels &ks-prod:ch:\* -@all \+ping \+info /);
    expect(rule).toContain(' +evalsha ');
    expect(rule).toMatch(/ \+config\|get$/);
    expect(redisAclRule('a*[b]:')).toContain('~a\\*\\[b\\]:* ');
    expect(redisAclRule('ks:', { password: 'secret' })).toMatch(/^on >secret resetkeys /);
  });
});

describe('why connecting to Redis failed, in what to change', () => {
  it('names the setting for TLS trust, host name, client certificates, rediss:// and credentials; nothing for the rest', () => {
    expect(redisConnectionHint({ code: 'SELF_SIGNED_CERT_IN_CHAIN', message: 'self-signed certificate in certificate chain' }, true)).toMatch(/NODE_EXTRA_CA_CERTS/);
    expect(redisConnectionHint({ code: 'UNABLE_TO_VERIFY_LEAF_SIGNATURE', message: 'unable to verify the first certificate' }, true)).toMatch(/NODE_EXTRA_CA_CERTS/);
    expect(redisConnectionHint({ code: 'ERR_TLS_CERT_ALTNAME_INVALID', message: "Hostname/IP does not match certificate's altnames" }, true)).toMatch(/^the host in REDIS_URL is not one Redis's TLS certificate names/);
    expect(redisConnectionHint({ code: 'ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED', message: 'tlsv13 alert certificate required' }, true)).toMatch(/tls-auth-clients no/);
    expect(redisConnectionHint({ code: 'ETIMEDOUT', message: 'connect ETIMEDOUT' }, true)).toMatch(/tls-port/);
    expect(redisConnectionHint({ code: 'ETIMEDOUT', message: 'connect ETIMEDOUT' }, false)).toBeUndefined();
    expect(redisConnectionHint({ code: 'ECONNRESET', message: 'read ECONNRESET' }, false)).toMatch(/rediss:\/\//);
    expect(redisConnectionHint({ message: 'WRONGPASS invalid username-password pair or user is disabled.' }, true)).toMatch(/user name or password/);
    expect(redisConnectionHint({ message: 'NOAUTH Authentication required.' }, false)).toMatch(/requires a password/);
    expect(redisConnectionHint({ code: 'ECONNREFUSED', message: 'connect ECONNREFUSED 127.0.0.1:1' }, false)).toBeUndefined();
  });
});
