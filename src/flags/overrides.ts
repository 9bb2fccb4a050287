// Local deny overrides from the Unleash webhook. A webhook can only make decisions stricter: it adds a
// deny for one flag at once, before the next poll; it never turns a flag on. An override ends when the
// polled state has caught up:
// - the poll's revision (Unleash's event id, from its ETag) is at or past the event's id: that poll
//   includes the disable, so whatever it shows is the truth (off: the poll denies by itself; on: an
//   operator turned the flag on again since);
// - when either id is unknown (an Unleash or proxy without revision ETags): the poll shows the flag off
//   or gone, or still shows it on more than UNKNOWN_REVISION_GRACE_MS after the event. Unleash updates
//   its revision every second, so a poll that late cannot predate the disable.
// An older poll that happens to show the flag off does not end it: a quick off-on-off sequence would
// otherwise open a window where the next, still older, poll shows "on".
// A `feature-environment-enabled` event (our environment) newer than the override also ends it (Unleash
// says the flag is on again; the poll is the authority either way). A `feature-revived` event never does:
// Unleash brings a revived flag back off, so it adds (or renews) a deny like an archive. An event id that polls have not
// reached after UNREACHED_REVISION_GRACE_MS was never this Unleash's: that override ends too.

export const UNKNOWN_REVISION_GRACE_MS = 10_000;
/**
 * An override whose event id successful polls have not reached for this long names an event this Unleash
 * never had (a forged webhook with a huge id would otherwise deny the flag until every replica restarts):
 * it ends like one of unknown revision. Long enough for a caching proxy in front of Unleash to catch up.
 */
export const UNREACHED_REVISION_GRACE_MS = 300_000;

export interface FlagOverride {
  flag: string;
  reason: 'disabled' | 'archived';
  /** Unleash event id (monotonic), when the event carried one. */
  eventId: number | null;
  /** When this replica (or the one that received the webhook) applied it, ms since epoch. */
  at: number;
}

export interface PollView {
  /** Revision of the polled data (max Unleash event id it includes), or null if unknown. */
  revision: number | null;
  /** True when the polled data has the flag and it is enabled in our environment. */
  isOn(flag: string): boolean;
  now: number;
}

export class OverrideSet {
  private readonly byFlag = new Map<string, FlagOverride>();

  get size(): number {
    return this.byFlag.size;
  }

  has(flag: string): boolean {
    return this.byFlag.size > 0 && this.byFlag.has(flag);
  }

  get(flag: string): FlagOverride | undefined {
    return this.byFlag.get(flag);
  }

  list(): FlagOverride[] {
    return [...this.byFlag.values()];
  }

  /** Adds a deny. An existing override is kept with the newest event id. Returns true when new. */
  deny(o: FlagOverride): boolean {
    const current = this.byFlag.get(o.flag);
    if (!current) {
      this.byFlag.set(o.flag, { ...o });
      return true;
    }
    if ((o.eventId ?? -1) > (current.eventId ?? -1)) this.byFlag.set(o.flag, { ...o, at: Math.max(o.at, current.at) });
    return false;
  }

  /** Unleash reported the flag on again (event id / time): drops an older override. */
  enabled(flag: string, eventId: number | null, at: number): boolean {
    const current = this.byFlag.get(flag);
    if (!current) return false;
    const newer = eventId !== null && current.eventId !== null ? eventId > current.eventId : at >= current.at;
    if (newer) this.byFlag.delete(flag);
    return newer;
  }

  /** Called after every successful poll; returns the flags whose override ended. */
  reconcile(poll: PollView): string[] {
    const dropped: string[] = [];
    for (const o of this.byFlag.values()) {
      const drop =
        poll.revision !== null && o.eventId !== null
          ? poll.revision >= o.eventId || poll.now - o.at > UNREACHED_REVISION_GRACE_MS
          : !poll.isOn(o.flag) || poll.now - o.at > UNKNOWN_REVISION_GRACE_MS;
      if (drop) dropped.push(o.flag);
    }
    for (const f of dropped) this.byFlag.delete(f);
    return dropped;
  }
}

/** Revision id from an Unleash ETag such as "6ef7ec5a:123:v1"; null for other formats. */
export function revisionFromEtag(etag: string | undefined | null): number | null {
  if (!etag) return null;
  const m = /^(?:W\/)?"?[0-9a-f]+:(\d+)(?::|")/.exec(etag);
  return m ? Number(m[1]) : null;
}
