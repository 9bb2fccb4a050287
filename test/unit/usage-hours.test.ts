import { describe, expect, it } from 'vitest';
import { splitAtHours } from '../../src/audit/store.js';

const d = (iso: string) => new Date(iso);
const iso = (r: { from?: Date | undefined; to?: Date | undefined } | null) => r && { from: r.from?.toISOString(), to: r.to?.toISOString() };
const split = (from?: string, to?: string) => {
  const s = splitAtHours(from ? d(from) : undefined, to ? d(to) : undefined);
  return { hours: iso(s.hours), edges: s.edges.map(iso) };
};

describe('splitAtHours: the whole UTC hours of [from, to) for the rollup, the partial ones at its edges for raw rows', () => {
  it('a window with both edges partial: the hours between, and each edge up to or from a whole hour', () => {
    expect(split('2026-05-01T10:17:00Z', '2026-05-03T15:42:00Z')).toEqual({
      hours: { from: '2026-05-01T11:00:00.000Z', to: '2026-05-03T15:00:00.000Z' },
      edges: [
        { from: '2026-05-01T10:17:00.000Z', to: '2026-05-01T11:00:00.000Z' },
        { from: '2026-05-03T15:00:00.000Z', to: '2026-05-03T15:42:00.000Z' },
      ],
    });
  });

  it('a window on whole hours reads no raw row', () => {
    expect(split('2026-05-01T10:00:00Z', '2026-05-08T10:00:00Z')).toEqual({ hours: { from: '2026-05-01T10:00:00.000Z', to: '2026-05-08T10:00:00.000Z' }, edges: [] });
  });

  it('a window holding no whole hour is raw, also one across an hour boundary', () => {
    expect(split('2026-05-01T10:05:00Z', '2026-05-01T10:50:00Z')).toEqual({ hours: null, edges: [{ from: '2026-05-01T10:05:00.000Z', to: '2026-05-01T10:50:00.000Z' }] });
    expect(split('2026-05-01T10:40:00Z', '2026-05-01T11:20:00Z')).toEqual({ hours: null, edges: [{ from: '2026-05-01T10:40:00.000Z', to: '2026-05-01T11:20:00.000Z' }] });
  });

  it('an open end has no edge on that side', () => {
    expect(split(undefined, '2026-05-01T10:00:00.001Z')).toEqual({ hours: { from: undefined, to: '2026-05-01T10:00:00.000Z' }, edges: [{ from: '2026-05-01T10:00:00.000Z', to: '2026-05-01T10:00:00.001Z' }] });
    expect(split()).toEqual({ hours: { from: undefined, to: undefined }, edges: [] });
  });
});
