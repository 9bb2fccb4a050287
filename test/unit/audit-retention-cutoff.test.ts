import { describe, expect, it } from 'vitest';
import { retentionCutoff } from '../../src/audit/service.js';

const DAY = 86_400_000;
const cut = (now: string, days: number) => retentionCutoff(new Date(now), days).toISOString();

describe('retentionCutoff: the start of the UTC month holding now - AUDIT_RETENTION_DAYS', () => {
  it('moves only when now - N days reaches a new month: every hour in between gives the same cut', () => {
    expect(cut('2026-12-06T10:00:00Z', 90)).toBe('2026-09-01T00:00:00.000Z'); // now - 90 days = 2026-09-07
    expect(cut('2026-12-29T23:59:59.999Z', 90)).toBe('2026-09-01T00:00:00.000Z'); // 2026-09-30T23:59:59.999
    expect(cut('2026-12-30T00:00:00Z', 90)).toBe('2026-10-01T00:00:00.000Z'); // exactly 2026-10-01
  });

  it('crosses a year', () => {
    expect(cut('2026-03-15T00:30:00Z', 90)).toBe('2025-12-01T00:00:00.000Z'); // 2025-12-15
    expect(cut('2026-01-01T00:00:00Z', 1)).toBe('2025-12-01T00:00:00.000Z');
  });

  it('is never later than now - N days and at most one month earlier', () => {
    for (let t = Date.parse('2026-01-01T00:00:00Z'); t < Date.parse('2027-01-01T00:00:00Z'); t += 7 * 3_600_000 + 13 * 60_000) {
      const c = retentionCutoff(new Date(t), 90).getTime();
      expect(c).toBeLessThanOrEqual(t - 90 * DAY);
      expect(t - 90 * DAY - c).toBeLessThan(31 * DAY);
    }
  });
});
