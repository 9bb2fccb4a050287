import { describe, expect, it } from 'vitest';
import { revokeNotice } from '../../ui/src/revoke-notice.js';

// The Tokens page said "every replica refuses it" after any revocation, also when Redis did not take the
// announcement (the others then refuse the token only when their cache entry expires).

describe('the notice after revoking a token in the admin UI', () => {
  it('says every replica refuses it only when the answer says every replica was told', () => {
    expect(revokeNotice('mcp_rw_XFuj', { announced: true })).toBe('Token mcp_rw_XFuj… revoked: every replica refuses it.');
  });

  it('says it was not announced, with the warning, when Redis did not take it; and when the answer does not say', () => {
    const warning = 'Revoked and audited. Redis did not take the announcement, so other replicas refuse it within 5000 ms (TOKEN_CACHE_TTL_MS) instead of at once; this replica refuses it already.';
    const notice = revokeNotice('mcp_rw_XFuj', { announced: false, warning });
    expect(notice).toContain('NOT announced to the other replicas yet');
    expect(notice).toContain(warning);
    expect(notice).not.toContain('every replica refuses it');
    expect(revokeNotice('mcp_rw_XFuj', {})).toContain('The answer does not say that every replica was told.');
    expect(revokeNotice('mcp_rw_XFuj', undefined)).toContain('NOT announced');
  });
});
