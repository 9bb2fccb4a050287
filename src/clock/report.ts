import { hostname } from 'node:os';
import type { AlertService } from '../alerts/service.js';
import type { AuditService } from '../audit/service.js';
import { type ClockOffset, type ClockSample, describeOffset } from './offset.js';

/**
 * What a replica says when its clock goes off Postgres's and when it is back, beyond the log line and
 * /readyz warning ClockOffset gives itself: a CLOCK_SKEW alert, once per host an hour across replicas and
 * workers (they share the host's clock), and the audit rows `clock.off` / `clock.back` (the trail outlives
 * alerts: which replica's rows carry Postgres's time, from when). docs/operations.md, "Clocks".
 */
export function reportClockChanges(clock: ClockOffset, alerts: Pick<AlertService, 'raiseOnce'>, audit: Pick<AuditService, 'recordAdmin'>): void {
  const host = hostname();
  clock.setOnChange((off: boolean, s: ClockSample) => {
    if (off) {
      void alerts
        .raiseOnce(`clock-skew:${host}`, 3_600, {
          kind: 'CLOCK_SKEW',
          message: `The clock of ${host} is ${describeOffset(s.offsetMs)} Postgres's: its replicas judge token, key and grant expiry and stamp audit rows with Postgres's time instead until its time sync (NTP, chrony) is fixed. docs/operations.md, "Clocks".`,
          numbers: { offset_ms: Math.round(s.offsetMs) },
        })
        .catch(() => {});
    }
    void audit
      .recordAdmin({
        actor: 'clock',
        action: off ? 'clock.off' : 'clock.back',
        target: `host:${host}`,
        details: { offset_ms: Math.round(s.offsetMs), local: new Date(s.wall).toISOString(), postgres: new Date(s.postgresMs).toISOString(), pid: process.pid },
      })
      .catch(() => {});
  });
}
