import { describe, expect, it } from 'vitest';
import { OverrideSet, revisionFromEtag, UNKNOWN_REVISION_GRACE_MS, UNREACHED_REVISION_GRACE_MS } from '../../src/flags/overrides.js';

const on = () => true;
const off = () => false;

describe('webhook deny overrides', () => {
  it('reads the revision from an Unleash ETag', () => {
    expect(revisionFromEtag('"6ef7ec5a:123:v1"')).toBe(123);
    expect(revisionFromEtag('W/"6ef7ec5a:9:v1"')).toBe(9);
    expect(revisionFromEtag('"abc"')).toBeNull();
    expect(revisionFromEtag(undefined)).toBeNull();
  });

  it('keeps the deny while the poll predates the event, and ends it once the poll includes the event', () => {
    const set = new OverrideSet();
    expect(set.deny({ flag: 'mcp.x.write', reason: 'disabled', eventId: 50, at: 1_000 })).toBe(true);
    expect(set.has('mcp.x.write')).toBe(true);
    // A stale poll still showing the flag on does not lift it; neither does a stale poll showing it off.
    expect(set.reconcile({ revision: 49, isOn: on, now: 60_000 })).toEqual([]);
    expect(set.reconcile({ revision: 49, isOn: off, now: 60_000 })).toEqual([]);
    expect(set.has('mcp.x.write')).toBe(true);
    // The poll has the event: whatever it says is the truth now (off: it denies itself; on: re-enabled since).
    expect(set.reconcile({ revision: 50, isOn: on, now: 2_000 })).toEqual(['mcp.x.write']);
    expect(set.has('mcp.x.write')).toBe(false);
  });

  it('an event id the polls never reach (a forged webhook: id 2^53-1) ends after UNREACHED_REVISION_GRACE_MS, not never', () => {
    const set = new OverrideSet();
    set.deny({ flag: 'mcp.enabled', reason: 'disabled', eventId: Number.MAX_SAFE_INTEGER, at: 1_000 });
    expect(set.reconcile({ revision: 120, isOn: on, now: 1_000 + UNREACHED_REVISION_GRACE_MS })).toEqual([]);
    expect(set.has('mcp.enabled')).toBe(true);
    expect(set.reconcile({ revision: 121, isOn: on, now: 1_001 + UNREACHED_REVISION_GRACE_MS })).toEqual(['mcp.enabled']);
  });

  it('without revisions: ends when the poll shows the flag off, or still on long after the event', () => {
    const set = new OverrideSet();
    set.deny({ flag: 'a', reason: 'disabled', eventId: null, at: 1_000 });
    set.deny({ flag: 'b', reason: 'archived', eventId: 7, at: 1_000 });
    expect(set.reconcile({ revision: null, isOn: on, now: 1_000 + UNKNOWN_REVISION_GRACE_MS - 1 })).toEqual([]);
    expect(set.reconcile({ revision: null, isOn: (f) => f !== 'a', now: 2_000 })).toEqual(['a']);
    expect(set.reconcile({ revision: null, isOn: on, now: 1_000 + UNKNOWN_REVISION_GRACE_MS + 1 })).toEqual(['b']);
  });

  it('an enabled event only ends an older deny', () => {
    const set = new OverrideSet();
    set.deny({ flag: 'a', reason: 'disabled', eventId: 10, at: 1_000 });
    expect(set.enabled('a', 9, 2_000)).toBe(false);
    expect(set.has('a')).toBe(true);
    expect(set.enabled('a', 11, 2_000)).toBe(true);
    expect(set.has('a')).toBe(false);
    expect(set.enabled('unknown', 12, 2_000)).toBe(false);
  });

  it('a repeated deny keeps the newest event id', () => {
    const set = new OverrideSet();
    set.deny({ flag: 'a', reason: 'disabled', eventId: 10, at: 1_000 });
    expect(set.deny({ flag: 'a', reason: 'disabled', eventId: 12, at: 1_500 })).toBe(false);
    expect(set.get('a')?.eventId).toBe(12);
    expect(set.reconcile({ revision: 11, isOn: on, now: 2_000 })).toEqual([]);
  });
});
