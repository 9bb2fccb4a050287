import { describe, expect, it } from 'vitest';
import { splitAtHours, splitForRollup } from '../../src/audit/store.js';

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

describe('splitForRollup: before the rollup starts (an upgraded installation) rows are read raw', () => {
  const START = Date.parse('2026-05-02T00:00:00Z');
  const at = (from: string | undefined, to: string | undefined, start = START) => {
    const s = splitForRollup(from ? d(from) : undefined, to ? d(to) : undefined, start);
    return { hours: iso(s.hours), edges: s.edges.map(iso) };
  };

  it('a window across the start: raw up to it, then as splitAtHours from it', () => {
    expect(at('2026-05-01T10:17:00Z', '2026-05-03T15:42:00Z')).toEqual({
      hours: { from: '2026-05-02T00:00:00.000Z', to: '2026-05-03T15:00:00.000Z' },
      edges: [
        { from: '2026-05-01T10:17:00.000Z', to: '2026-05-02T00:00:00.000Z' },
        { from: '2026-05-03T15:00:00.000Z', to: '2026-05-03T15:42:00.000Z' },
      ],
    });
    expect(at(undefined, undefined)).toEqual({ hours: { from: '2026-05-02T00:00:00.000Z', to: undefined }, edges: [{ from: undefined, to: '2026-05-02T00:00:00.000Z' }] });
  });

  it('a window wholly before the start is raw; one wholly after it is as splitAtHours', () => {
    expect(at('2026-04-01T00:00:00Z', '2026-05-02T00:00:00Z')).toEqual({ hours: null, edges: [{ from: '2026-04-01T00:00:00.000Z', to: '2026-05-02T00:00:00.000Z' }] });
    expect(at('2026-05-02T00:00:00Z', '2026-05-02T03:00:00Z')).toEqual(split('2026-05-02T00:00:00Z', '2026-05-02T03:00:00Z'));
  });

  it('a new installation (-infinity) reads the rollup for every whole hour; no start row reads everything raw', () => {
    expect(at(undefined, '2026-05-01T10:00:00Z', Number.NEGATIVE_INFINITY)).toEqual(split(undefined, '2026-05-01T10:00:00Z'));
    expect(at('2026-04-01T00:00:00Z', '2026-05-09T00:00:00Z', Number.POSITIVE_INFINITY)).toEqual({ hours: null, edges: [{ from: '2026-04-01T00:00:00.000Z', to: '2026-05-09T00:00:00.000Z' }] });
  });
});
