import type { Config } from '../config.js';
import { type ApiKill, CliFailure, call, controlPlaneUrl, line as killLine, readKills, readPages, UnreachableFailure } from './kill.js';
import { printable, printableJson } from './printable.js';

// `killswitch status`: the on-call operator's one screen. Is the kill switch working (GET /readyz), what
// is stopped right now (the kills in force, the halted sessions), what is open (alerts), and do the
// replicas decide with one policy. Through the admin API exactly as `killswitch kill | kills | unkill`
// (KILLSWITCH_URL, KILLSWITCH_OPERATOR_KEY, the client certificate, the same timeouts and messages); a
// viewer key is enough: it only reads. Fail closed: a read that failed is named, never shown as "none".

export interface StatusOptions {
  all?: boolean;
  json?: boolean;
}

type Out = { write(s: string): unknown };

/** Exit codes (docs/cli.md): 0 every read answered; 1 unreachable or a read failed; 2 usage; 3 /readyz says not ready. */
export const STATUS_NOT_READY = 3;

/** How many halted sessions and open alerts are listed (human output, and --json) without --all. */
export const STATUS_NEWEST = 5;
/** How many kills the human output lists without --all (--json lists every kill in force). */
export const STATUS_KILLS_SHOWN = 10;
/** Halted sessions and open alerts counted without --all: beyond it the count says "at least" (complete: false). */
export const STATUS_COUNT_CAP = 5000;

interface ApiSession {
  id: string;
  token_id: string;
  project_id: string;
  state: string;
  trigger: string | null;
  halted_by: 'session' | 'token' | null;
  halted_at: string | null;
  token_halt: { trigger: string; halted_at: string } | null;
}

interface ApiAlert {
  id: string;
  kind: string;
  severity: string;
  token_id: string | null;
  session_id: string | null;
  server: string | null;
  message: string;
  created_at: string;
}

interface Readiness {
  ready: boolean;
  checks: Record<string, string>;
  warnings: string[];
}

interface Replicas {
  this_replica: string;
  hash: string;
  distinct: number;
  policies: Array<{ hash: string; replicas: number }>;
  replicas: Array<{ replica_id: string; host: string; pid: number; hash: string; loaded_at: string; seen_at: string }>;
}

/** GET /v1/operator-keys/me. */
interface ApiCurrentKey {
  id: string;
  name: string;
  role: string;
  projects: string[] | null;
  expires_at: string | null;
}

/** `--json`: every key always present; a section whose read failed is null and named in `errors`. */
export interface StatusReport {
  control_plane: string;
  /** The operator key read with (null: a control plane older than GET /v1/operator-keys/me, or that read failed). */
  key: ApiCurrentKey | null;
  checked_at: string;
  exit_code: number;
  readiness: Readiness | null;
  kills: { count: number; items: ApiKill[] } | null;
  halted_sessions: { count: number; complete: boolean; items: ApiSession[] } | null;
  open_alerts: { count: number; complete: boolean; by_severity: Record<'critical' | 'warning' | 'info', number>; items: ApiAlert[] } | null;
  policy_replicas: { distinct: number; diverged: boolean; hash: string; policies: Replicas['policies']; replicas: Replicas['replicas'] } | null;
  errors: Array<{ read: string; message: string }>;
}

const isReadiness = (j: Record<string, unknown>) => typeof j['ready'] === 'boolean' && typeof j['checks'] === 'object' && j['checks'] !== null && Array.isArray(j['warnings']);

const haltedAt = (s: ApiSession) => s.halted_at ?? s.token_halt?.halted_at ?? '';

/** Reads everything (readiness first: nothing answering there ends the command with exit 1) and builds the report. */
export async function readStatus(cfg: Config, o: StatusOptions): Promise<StatusReport> {
  const origin = controlPlaneUrl(cfg.killswitchUrl).origin;
  const errors: StatusReport['errors'] = [];
  // /readyz answers 503 with the same body when not ready: that is an answer, not a failed read.
  let readiness: Readiness;
  try {
    readiness = (await call(cfg, 'GET', 'readyz', undefined, isReadiness, [503])) as Readiness;
  } catch (err) {
    // Nothing that is the control plane answered (every read would fail alike), or a usage error: as it is.
    if (!(err instanceof CliFailure) || err instanceof UnreachableFailure || err.exitCode === 2) throw err;
    throw new CliFailure(`status: could not read readiness (GET /readyz): ${err.message}`, 1);
  }
  const cap = o.all ? null : STATUS_COUNT_CAP;
  const attempt = async <T>(read: string, fn: () => Promise<T>): Promise<T | null> => {
    try {
      return await fn();
    } catch (err) {
      // Configuration errors (exit 2) were found on the first request; anything else here is this read's failure.
      if (!(err instanceof CliFailure)) throw err;
      errors.push({ read, message: err.message });
      return null;
    }
  };
  const [key, kills, sessions, alerts, replicas] = await Promise.all([
    // A 404: a control plane older than this command, which has no such route; the rest is read as before.
    attempt('key', async () => {
      const j = (await call(cfg, 'GET', 'v1/operator-keys/me', undefined, (j) => typeof j['role'] === 'string' || typeof j['error'] === 'object', [404])) as Record<string, unknown>;
      return typeof j['role'] === 'string' ? (j as unknown as ApiCurrentKey) : null;
    }),
    attempt('kills', () => readKills(cfg, false)),
    attempt('halted_sessions', () =>
      readPages<ApiSession>(cfg, (c, n) => `v1/sessions?state=halted&limit=${n}${c ? `&cursor=${encodeURIComponent(c)}` : ''}`, 'sessions', 'next_cursor', cap),
    ),
    attempt('open_alerts', () => readPages<ApiAlert>(cfg, (c, n) => `v1/alerts?acknowledged=false&limit=${n}${c ? `&before=${encodeURIComponent(c)}` : ''}`, 'alerts', 'next_before', cap)),
    attempt('policy_replicas', async () => (await call(cfg, 'GET', 'v1/policy/replicas', undefined, (j) => typeof j['distinct'] === 'number' && Array.isArray(j['policies']))) as Replicas),
  ]);
  const bySeverity = { critical: 0, warning: 0, info: 0 };
  for (const a of alerts?.items ?? []) if (a.severity in bySeverity) bySeverity[a.severity as keyof typeof bySeverity]++;
  const halted = sessions ? [...sessions.items].sort((a, b) => haltedAt(b).localeCompare(haltedAt(a))) : null;
  // Not ready first: it explains reads that failed with it. Then a failed read.
  const exitCode = !readiness.ready ? STATUS_NOT_READY : errors.length > 0 ? 1 : 0;
  return {
    control_plane: origin,
    key,
    checked_at: new Date().toISOString(),
    exit_code: exitCode,
    readiness: { ready: readiness.ready, checks: readiness.checks, warnings: readiness.warnings },
    kills: kills ? { count: kills.length, items: kills } : null,
    halted_sessions:
      sessions && halted ? { count: sessions.items.length, complete: sessions.complete, items: o.all ? halted : halted.slice(0, STATUS_NEWEST) } : null,
    open_alerts: alerts
      ? { count: alerts.items.length, complete: alerts.complete, by_severity: bySeverity, items: o.all ? alerts.items : alerts.items.slice(0, STATUS_NEWEST) }
      : null,
    policy_replicas: replicas
      ? { distinct: replicas.distinct, diverged: replicas.distinct > 1, hash: replicas.hash, policies: replicas.policies, replicas: replicas.replicas }
      : null,
    errors,
  };
}

const cut = (text: string, max: number) => (text.length > max ? `${text.slice(0, max - 1)}…` : text);
const plural = (n: number, one: string, many = `${one}s`) => `${n} ${n === 1 ? one : many}`;
const FAILED = 'COULD NOT BE READ (see below)';

/** The one screen: at most about 40 lines without --all. Every text from the API goes through printable. */
export function renderStatus(r: StatusReport, o: StatusOptions): string {
  const out: string[] = [];
  const w = (s: string) => out.push(s);
  w(`Control plane ${r.control_plane} (KILLSWITCH_URL) at ${r.checked_at}`);
  // A key limited to projects reads only their kills, sessions and alerts: "none" below means none of theirs.
  if (r.key) {
    const reach = r.key.projects === null ? 'every project' : `projects ${r.key.projects.join(', ')}: kills, halted sessions and alerts of other projects are not shown`;
    w(printable(`Key: ${r.key.name} (${r.key.role}, ${reach}${r.key.expires_at ? `; expires ${r.key.expires_at}` : ''})`));
  }
  const rd = r.readiness!;
  const ok = Object.keys(rd.checks).filter((k) => rd.checks[k] === 'ok');
  const failing = Object.entries(rd.checks).filter(([, v]) => v !== 'ok');
  if (rd.ready) w(printable(`Readiness: ready (${ok.map((k) => `${k} ok`).join(', ')})`));
  else w(printable(`Readiness: NOT READY: ${failing.map(([k, v]) => `${k}: ${v}`).join('; ')}${ok.length ? ` (${ok.map((k) => `${k} ok`).join(', ')})` : ''}`));
  for (const warning of rd.warnings) w(printable(`  warning: ${warning}`));

  if (!r.kills) w(`Kills in force: ${FAILED}`);
  else {
    w(r.kills.count === 0 ? 'Kills in force: none' : `Kills in force: ${r.kills.count}`);
    const shown = o.all ? r.kills.items : r.kills.items.slice(0, STATUS_KILLS_SHOWN);
    for (const k of shown) w(`  ${killLine(k)}`);
    if (shown.length < r.kills.count) w(`  … and ${r.kills.count - shown.length} more (killswitch kills, or status --all)`);
  }

  if (!r.halted_sessions) w(`Halted sessions: ${FAILED}`);
  else {
    const h = r.halted_sessions;
    w(h.count === 0 ? 'Halted sessions: none' : `Halted sessions: ${h.complete ? '' : 'at least '}${h.count}${h.items.length < h.count ? `, newest ${h.items.length}:` : ''}`);
    for (const s of h.items) {
      const trigger = s.trigger ?? s.token_halt?.trigger ?? '?';
      w(printable(`  ${s.id}  ${trigger}  token ${s.token_id}  project ${s.project_id}  halted ${haltedAt(s) || '?'}${s.halted_by === 'token' ? ' (its token is halted)' : ''}`));
    }
  }

  if (!r.open_alerts) w(`Open alerts: ${FAILED}`);
  else {
    const a = r.open_alerts;
    const sev = `${a.by_severity.critical} critical, ${a.by_severity.warning} warning, ${a.by_severity.info} info`;
    w(a.count === 0 ? 'Open alerts: none' : `Open alerts: ${a.complete ? '' : 'at least '}${a.count} (${sev})${a.items.length < a.count ? `, newest ${a.items.length}:` : ''}`);
    for (const al of a.items) w(printable(`  ${al.created_at}  ${al.severity.padEnd(8)}  ${al.kind}  ${o.all ? al.message : cut(al.message, 120)}`));
  }

  if (!r.policy_replicas) w(`Policy replicas: ${FAILED}`);
  else if (r.policy_replicas.diverged) {
    const p = r.policy_replicas;
    w(printable(`Policy: REPLICAS DIVERGE: ${p.distinct} different policies: ${p.policies.map((x) => `${x.hash.slice(0, 8)} on ${plural(x.replicas, 'replica')}`).join(', ')}`));
    for (const x of p.replicas.slice(0, o.all ? undefined : STATUS_NEWEST)) w(printable(`  ${x.host} pid ${x.pid}  ${x.hash.slice(0, 8)}  loaded ${x.loaded_at}`));
  } else {
    const p = r.policy_replicas;
    w(printable(`Policy: one policy (${p.hash.slice(0, 8)}) on ${plural(p.replicas.length, 'live replica')}`));
  }
  return `${out.join('\n')}\n`;
}

/** What went wrong, on stderr: each failed read (grouped when they failed alike), and not ready (exit 3). */
export function statusProblems(r: StatusReport): string {
  const lines: string[] = [];
  const byMessage = new Map<string, string[]>();
  for (const e of r.errors) byMessage.set(e.message, [...(byMessage.get(e.message) ?? []), e.read]);
  for (const [message, reads] of byMessage) lines.push(`killswitch: status: could not read ${reads.join(', ')}: ${message}`);
  if (r.readiness && !r.readiness.ready) {
    lines.push(
      `killswitch: status: the control plane is NOT READY (exit ${STATUS_NOT_READY}): ${printable(
        Object.entries(r.readiness.checks)
          .filter(([, v]) => v !== 'ok')
          .map(([k, v]) => `${k}: ${v}`)
          .join('; '),
      )}. Decisions fail closed while a check fails; its log has the driver's error (docs/runbook-incident.md).`,
    );
  }
  return lines.length ? `${lines.join('\n')}\n` : '';
}

export async function status(cfg: Config, o: StatusOptions, out: Out, err: Out): Promise<number> {
  const report = await readStatus(cfg, o);
  out.write(o.json ? `${printableJson(report)}\n` : renderStatus(report, o));
  err.write(statusProblems(report));
  return report.exit_code;
}
