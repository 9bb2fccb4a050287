import { createHash } from 'node:crypto';
import { PUBLISHED_WEBHOOK_SECRET } from '../config.js';
import { type UnleashAddon, type UnleashAdmin, UnleashAdminError, type UnleashContextField, type UnleashStrategy } from './admin-client.js';
import { type FlagDefinition, strategyFingerprint, strategyPayload } from './definitions.js';

// `flags sync`: makes Unleash have every flag of flags/ (and of the policy) without ever loosening what an
// operator did in Unleash. The rules, in the order an incident cares about:
// - a missing flag is created, with its strategies, and turned on in the control plane's environment only
//   when Unleash never had a flag of that name (its event log has no event for it). One that existed
//   before (deleted in Unleash) is created OFF: an operator may have deleted it to stop what it allows.
//   When the event log cannot be read, it is created off too: a flag is never turned on by doubt;
// - an existing flag's on/off state is never changed (a flag an operator turned off stays off), and an
//   archived flag is not revived;
// - descriptions and types follow the files;
// - strategies follow the files only while they are exactly what an earlier sync wrote. Sync titles each
//   strategy "flags-as-code <fingerprint>"; if any strategy of the flag was edited in Unleash (fingerprint
//   no longer matches), added by hand, or all were removed, the flag's strategies are left alone and
//   reported as drifted, because replacing an operator's constraint could re-open what it closed.

export const MANAGED_TITLE = /^flags-as-code ([0-9a-f]{12})$/;
export const WEBHOOK_EVENTS = [
  'feature-environment-disabled',
  'feature-environment-enabled',
  'feature-archived',
  'feature-revived',
  'feature-updated',
  'feature-strategy-add',
  'feature-strategy-update',
  'feature-strategy-remove',
] as const;

export interface SyncInput {
  admin: UnleashAdmin;
  /** The Unleash environment the control plane reads (UNLEASH_ENVIRONMENT). */
  environment: string;
  flags: FlagDefinition[];
  /** Policy servers, offered as legal values of the `server` context field in the Unleash UI. */
  servers: string[];
  /** Where Unleash posts flag events, and whether an existing webhook may be changed; undefined skips it. */
  webhook?: WebhookRequest | undefined;
  /**
   * Told what became of the webhook as soon as that step is over, before the flags are synced (which may
   * still fail): the outcome, or the error that ended the sync there.
   */
  onWebhook?: ((outcome: { ok: true; outcome: WebhookOutcome } | { ok: false; error: unknown }) => void) | undefined;
  concurrency?: number;
}

export interface SyncReport {
  /** Created and turned on: Unleash never had a flag of that name. */
  created: string[];
  /** Created OFF: Unleash had a flag of that name before (deleted): turn it on in Unleash when intended. */
  recreatedOff: string[];
  /** Created OFF: Unleash's event log could not be read to tell whether it is new. */
  createdOff: string[];
  updated: string[];
  unchanged: string[];
  /** Exist but are off in the environment: left off (sync never turns a flag on). */
  off: string[];
  /** Archived in Unleash: left archived, so the flag step denies them as missing. */
  archived: string[];
  /** Exist in Unleash, but not in the project the control plane reads (moved to another project?). */
  elsewhere: string[];
  /** Strategies edited in Unleash: left as the operator set them. */
  drifted: string[];
  contextFields: { created: string[]; updated: string[] };
  webhook: WebhookOutcome;
}

const CONTEXT_FIELDS: Array<{ name: string; description: string; legal?: string[] }> = [
  { name: 'tokenType', description: 'Agent token type: ro (mcp_ro_), rw (mcp_rw_) or admin (mcp_admin_).', legal: ['ro', 'rw', 'admin'] },
  { name: 'role', description: 'Policy role of the agent token (e.g. code_agent).' },
  { name: 'mcpEnvironment', description: "The agent token's environment (not the Unleash environment).", legal: ['development', 'staging', 'production'] },
  { name: 'projectId', description: 'Project of the agent token.' },
  { name: 'server', description: 'MCP server of the call, as named in the policy.' },
  { name: 'tool', description: 'MCP tool of the call.' },
  { name: 'capability', description: 'What the call does: read, write or delete.', legal: ['read', 'write', 'delete'] },
];

async function mapLimited<T>(items: readonly T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const item = items[next++]!;
      await fn(item);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}

/** The strategy sync writes for definition `i` of a flag (titled with its fingerprint). */
export function managedStrategy(flag: FlagDefinition, i: number): UnleashStrategy {
  const s = strategyPayload(flag.name, flag.strategies[i]!);
  return { name: s.name, title: `flags-as-code ${strategyFingerprint(s)}`, parameters: s.parameters, constraints: s.constraints, segments: [], disabled: false };
}

/**
 * A create that lost a race with another sync creating the same thing: unleash-server answers 409
 * (NameExistsError) when its own check saw the other one, else 500 with Postgres's unique violation.
 */
function createdMeanwhile(err: unknown): boolean {
  return err instanceof UnleashAdminError && (err.status === 409 || (err.status === 500 && err.message.includes('duplicate key')));
}

async function ensureContextFields(admin: UnleashAdmin, servers: string[], report: SyncReport): Promise<void> {
  let existing = new Map((await admin.listContextFields()).map((f) => [f.name, f]));
  const bodyFor = (field: (typeof CONTEXT_FIELDS)[number], current: UnleashContextField | undefined): UnleashContextField => {
    const wanted = field.name === 'server' ? servers : field.legal;
    // Values an operator added in the UI are kept.
    const legal = [...new Set([...(current?.legalValues ?? []).map((v) => v.value), ...(wanted ?? [])])].sort();
    return { name: field.name, description: field.description, stickiness: false, legalValues: legal.map((value) => ({ value })) };
  };
  for (const field of CONTEXT_FIELDS) {
    let current = existing.get(field.name);
    if (!current) {
      try {
        await admin.createContextField(bodyFor(field, undefined));
        report.contextFields.created.push(field.name);
        continue;
      } catch (err) {
        // Another sync (a replica starting at the same time, an operator's `flags sync`) created it a moment
        // ago: read it back and bring it up to date like any existing field.
        if (!createdMeanwhile(err)) throw err;
        existing = new Map((await admin.listContextFields()).map((f) => [f.name, f]));
        current = existing.get(field.name);
        if (!current) throw err;
      }
    }
    const body = bodyFor(field, current);
    const currentLegal = (current.legalValues ?? []).map((v) => v.value).sort();
    if (current.description !== field.description || currentLegal.join('\n') !== (body.legalValues ?? []).map((v) => v.value).join('\n')) {
      await admin.updateContextField(body);
      report.contextFields.updated.push(field.name);
    }
  }
}

/** A webhook integration of ours as found in Unleash (URL and secret as recorded in its description). */
export interface RegisteredWebhook {
  id: number;
  enabled: boolean;
  /** The URL sync registered, or null for an integration from a sync before the URL was recorded. */
  url: string | null;
  /** secretFingerprint() of the secret sync registered, or null (as url). */
  secret: string | null;
}

export interface WebhookOutcome {
  /**
   * created: there was no webhook of ours (or none for this control plane, when owning); updated: ours,
   * rewritten (see `rewritten`); unchanged: no longer given (kept for recorded registrations); kept: one exists with another URL or secret (or one an
   * older sync registered, which cannot be read back) and was left alone; skipped: not asked for.
   */
  result: 'created' | 'updated' | 'unchanged' | 'kept' | 'skipped';
  /** The URL asked for. */
  url: string | null;
  /**
   * With `kept`, why: `others` — Unleash has webhooks of ours only for other URLs and secrets (none was
   * changed, none created); `unrecorded` — an older sync registered one, whose URL and secret cannot be
   * read back; `differs` — one posts to `url`, and its URL or secret differs from what was asked.
   */
  kept?: { reason: 'others' | 'unrecorded' | 'differs'; url: string | null; urlDiffers: boolean; secretDiffers: boolean };
  /** Other webhooks of ours in this Unleash, left alone: another installation's, or stale ones. */
  others: Array<{ url: string | null; enabled: boolean }>;
  /**
   * With `updated`: everything Unleash shows of it was already right, so whether its URL or secret (which
   * Unleash masks) had changed cannot be told: rewritten anyway.
   */
  rewritten?: boolean;
  /**
   * The integration found (updated or kept) carried UNLEASH_WEBHOOK_SECRET's old published default, which
   * the receiver no longer accepts unless configured: an installation registered before the upgrade.
   */
  publishedSecret?: boolean;
}

/**
 * Whether sync may change an existing webhook of ours:
 * - `own`: the caller is the receiver at `url` with `secret` (the control plane at start, or an operator
 *   who said so with `--replace-webhook`). It takes over the integration that posts to its URL, else the
 *   one carrying its secret (the same installation moved), else one an older sync registered; it never
 *   changes one with another URL and another secret (another installation sharing this Unleash) and
 *   registers its own next to it.
 * - `keep`: an operator's shell, whose PUBLIC_URL/HOST/PORT and secret may not be the control plane's.
 *   Creates the webhook only when Unleash has none of ours; an existing one with another URL or secret is
 *   reported, not changed.
 */
export type WebhookMode = 'own' | 'keep';

export interface WebhookRequest {
  url: string;
  secret: string;
  mode: WebhookMode;
}

const MARK = 'killswitch control plane: flag changes applied at once (managed by flags sync';
const RECORDED = /; for (\S+), secret sha256:([0-9a-f]{12})\)$/;

/**
 * Unleash masks a webhook's URL and Authorization when listing (sensitive parameters), so sync records
 * what it registered in the integration's description: the URL, and a short hash of the secret. The
 * hash gives nothing away to Unleash admins: they can already point the webhook at a server of theirs
 * and read the secret from the requests (Unleash keeps a masked parameter on update).
 */
export function secretFingerprint(secret: string): string {
  return createHash('sha256').update(`killswitch-unleash-webhook\n${secret}`).digest('hex').slice(0, 12);
}

/** The receiver URL in one spelling, so a recorded URL compares equal to the same URL computed again. */
export function normalizeWebhookUrl(url: string): string {
  return new URL(url).href;
}

function webhookDescription(url: string, secret: string): string {
  return `${MARK}; for ${url}, secret sha256:${secretFingerprint(secret)})`;
}

function ours(a: UnleashAddon): boolean {
  return a.provider === 'webhook' && (a.description ?? '').startsWith(MARK);
}

export function registeredWebhook(a: UnleashAddon): RegisteredWebhook {
  const m = RECORDED.exec(a.description ?? '');
  return { id: a.id, enabled: a.enabled, url: m ? m[1]! : null, secret: m ? m[2]! : null };
}

const sameList = (a: readonly string[] | undefined, b: readonly string[]) => [...(a ?? [])].sort().join('\n') === [...b].sort().join('\n');

/** Turned off, not deleted: unleash-server 7.5.1 exits (an unhandled rejection) when an integration is deleted while it delivers an event. */
async function turnOff(admin: UnleashAdmin, a: UnleashAddon): Promise<void> {
  if (!a.enabled) return;
  await admin.updateAddon(a.id, { provider: a.provider, enabled: false, description: a.description ?? '', parameters: a.parameters, events: a.events, projects: a.projects ?? ['*'], environments: a.environments ?? ['*'] });
}

/**
 * After creating one: syncs that ran at the same time (replicas starting together on a fresh Unleash,
 * an operator's `flags sync` during a start) may each have found none and created one. Every one of them
 * lists again after its create and turns off the enabled integrations posting to the URL (with `keep`, and
 * the same secret) other than the oldest, so they agree on the oldest without talking to each other: the
 * later of any two creates sees the earlier one. The start's sync also runs under an advisory lock
 * (setup.ts), so this is for what that lock does not cover.
 */
async function turnOffLaterTwins(admin: UnleashAdmin, want: WebhookRequest, url: string, secret: string): Promise<void> {
  const addons = (await admin.listAddons()).filter(ours);
  const twins = addons
    .filter((a) => a.enabled)
    .map(registeredWebhook)
    .filter((w) => w.url === url && (want.mode === 'own' || w.secret === secret))
    .sort((a, b) => a.id - b.id);
  for (const w of twins.slice(1)) await turnOff(admin, addons.find((a) => a.id === w.id)!);
}

async function ensureWebhook(admin: UnleashAdmin, want: WebhookRequest): Promise<WebhookOutcome> {
  const url = normalizeWebhookUrl(want.url);
  const secret = secretFingerprint(want.secret);
  const body = {
    provider: 'webhook',
    enabled: true,
    description: webhookDescription(url, want.secret),
    parameters: { url, authorization: want.secret, contentType: 'application/json' },
    events: [...WEBHOOK_EVENTS],
    // Every environment, so the receiver can warn when an operator toggles one the control plane does not read.
    projects: ['*'],
    environments: ['*'],
  };
  const addons = (await admin.listAddons()).filter(ours);
  // Enabled ones first: a duplicate sync turned off is never the one picked. Then the oldest: Unleash lists
  // the one last written first, and every sync writes the one it picks.
  const all = addons.map(registeredWebhook).sort((a, b) => Number(b.enabled) - Number(a.enabled) || a.id - b.id);
  const exact = all.filter((w) => w.url === url && w.secret === secret);
  const mine = exact[0] ?? all.find((w) => w.url === url) ?? all.find((w) => w.url !== null && w.secret === secret) ?? all.find((w) => w.url === null);
  // Several integrations posting to one URL deliver every event twice, or fail with a stale secret: turned off.
  const duplicates = all.filter((w) => w !== mine && w.url === url && (want.mode === 'own' || w.secret === secret));
  for (const d of duplicates) await turnOff(admin, addons.find((x) => x.id === d.id)!);
  const others = all.filter((w) => w !== mine && !duplicates.includes(w)).map((w) => ({ url: w.url, enabled: w.enabled }));

  if (!mine) {
    if (want.mode === 'keep' && all.length > 0) return { result: 'kept', url, kept: { reason: 'others', url: null, urlDiffers: true, secretDiffers: true }, others };
    await admin.createAddon(body);
    await turnOffLaterTwins(admin, want, url, secret);
    return { result: 'created', url, others };
  }
  const same = mine.url === url && mine.secret === secret;
  const published = mine.secret !== secret && mine.secret === secretFingerprint(PUBLISHED_WEBHOOK_SECRET) ? { publishedSecret: true } : {};
  if (!same && want.mode === 'keep') {
    return {
      result: 'kept',
      url,
      kept: { reason: mine.url === null ? 'unrecorded' : 'differs', url: mine.url, urlDiffers: mine.url !== url, secretDiffers: mine.secret !== secret },
      others,
      ...published,
    };
  }
  // Rewritten even when everything Unleash shows is right: it masks the URL and secret when read back, so
  // one changed in the UI (description kept) looks the same. Writing them is one PUT, and restores only what
  // the description records (or, with `own`, what the caller is).
  const current = addons.find((a) => a.id === mine.id)!;
  const looksSettled =
    same &&
    current.enabled &&
    current.description === body.description &&
    current.parameters['contentType'] === body.parameters.contentType &&
    sameList(current.events, body.events) &&
    sameList(current.projects, body.projects) &&
    sameList(current.environments, body.environments);
  await admin.updateAddon(mine.id, body);
  return { result: 'updated', url, others, ...published, ...(looksSettled ? { rewritten: true } : {}) };
}

async function reconcileStrategies(input: SyncInput, flag: FlagDefinition, current: UnleashStrategy[]): Promise<'unchanged' | 'updated' | 'drifted'> {
  if (current.length === 0) return 'drifted';
  for (const s of current) {
    const m = MANAGED_TITLE.exec(s.title ?? '');
    if (!m || m[1] !== strategyFingerprint(s)) return 'drifted';
  }
  const wanted = flag.strategies.map((_s, i) => managedStrategy(flag, i));
  const key = (s: UnleashStrategy) => strategyFingerprint(s);
  const have = current.map(key).sort().join(',');
  if (have === wanted.map(key).sort().join(',')) return 'unchanged';
  // Add the new ones before removing the old, so the flag never passes through "no strategy".
  const currentKeys = new Set(current.map(key));
  const wantedKeys = new Set(wanted.map(key));
  for (const s of wanted) if (!currentKeys.has(key(s))) await input.admin.addStrategy(flag.name, input.environment, s);
  for (const s of current) if (!wantedKeys.has(key(s)) && s.id) await input.admin.deleteStrategy(flag.name, input.environment, s.id);
  return 'updated';
}

async function syncFlag(input: SyncInput, flag: FlagDefinition, archived: Set<string>, report: SyncReport): Promise<void> {
  const { admin, environment } = input;
  const existing = await admin.getFeature(flag.name);
  if (!existing) {
    if (archived.has(flag.name)) {
      report.archived.push(flag.name);
      return;
    }
    // Asked before creating it (its creation is an event too). Unreadable: treated as existed before.
    const existedBefore = await admin.hasFeatureEvents(flag.name).catch(() => undefined);
    try {
      await admin.createFeature(flag);
    } catch (err) {
      if (createdMeanwhile(err)) {
        // Another replica's sync created it a moment ago (then sync it as existing), it was archived since
        // the list was read, or a flag of that name lives in another project (names are global in Unleash).
        if (await admin.getFeature(flag.name)) return syncFlag(input, flag, archived, report);
        if ((await admin.archivedFeatureNames()).has(flag.name)) report.archived.push(flag.name);
        else report.elsewhere.push(flag.name);
        return;
      }
      throw err;
    }
    for (let i = 0; i < flag.strategies.length; i++) await admin.addStrategy(flag.name, environment, managedStrategy(flag, i));
    await admin.setEnabled(flag.name, environment, existedBefore === false);
    if (existedBefore === false) report.created.push(flag.name);
    else (existedBefore ? report.recreatedOff : report.createdOff).push(flag.name);
    return;
  }
  const env = existing.environments.find((e) => e.name === environment);
  if (!env) throw new Error(`Unleash environment "${environment}" is not enabled for project default (flag ${flag.name}); check UNLEASH_ENVIRONMENT`);
  let changed = false;
  const patch: { description?: string; type?: string } = {};
  if ((existing.description ?? '') !== flag.description) patch.description = flag.description;
  if (existing.type !== flag.type) patch.type = flag.type;
  if (Object.keys(patch).length) {
    await admin.updateFeature(flag.name, patch);
    changed = true;
  }
  const strategies = await reconcileStrategies(input, flag, env.strategies);
  if (strategies === 'drifted') report.drifted.push(flag.name);
  if (strategies === 'updated') changed = true;
  if (!env.enabled) report.off.push(flag.name);
  (changed ? report.updated : report.unchanged).push(flag.name);
}

/** Applies the flag definitions (and the webhook integration) to Unleash. Idempotent. */
export async function syncFlags(input: SyncInput): Promise<SyncReport> {
  const report: SyncReport = { created: [], recreatedOff: [], createdOff: [], updated: [], unchanged: [], off: [], archived: [], elsewhere: [], drifted: [], contextFields: { created: [], updated: [] }, webhook: { result: 'skipped', url: null, others: [] } };
  // The webhook first: Unleash caches its integration list, and the events of the flags created below
  // should already reach the control plane.
  if (input.webhook) {
    try {
      report.webhook = await ensureWebhook(input.admin, input.webhook);
    } catch (error) {
      input.onWebhook?.({ ok: false, error });
      throw error;
    }
    input.onWebhook?.({ ok: true, outcome: report.webhook });
  }
  await ensureContextFields(input.admin, input.servers, report);
  const archived = await input.admin.archivedFeatureNames();
  await mapLimited(input.flags, input.concurrency ?? 6, (flag) => syncFlag(input, flag, archived, report));
  for (const list of [report.created, report.recreatedOff, report.createdOff, report.updated, report.unchanged, report.off, report.archived, report.elsewhere, report.drifted]) list.sort();
  return report;
}

/** One line per notable outcome, for the CLI and the start log. */
export function describeSyncReport(r: SyncReport, environment: string): string[] {
  const lines = [
    `flags: ${r.created.length} created${r.recreatedOff.length + r.createdOff.length ? `, ${r.recreatedOff.length + r.createdOff.length} created off` : ''}, ${r.updated.length} updated, ${r.unchanged.length} unchanged (Unleash environment ${environment}); webhook ${r.webhook.rewritten ? 'rewritten' : r.webhook.result}`,
  ];
  if (r.webhook.url && r.webhook.result !== 'kept' && r.webhook.result !== 'skipped') lines.push(`webhook: ${r.webhook.url}`);
  if (r.webhook.result === 'updated' && r.webhook.publishedSecret) {
    lines.push(`webhook: its secret was UNLEASH_WEBHOOK_SECRET's old published default (${PUBLISHED_WEBHOOK_SECRET}), which the control plane no longer accepts: replaced with the control plane's`);
  }
  if (r.off.length) lines.push(`off in ${environment} (left off; turn on in the Unleash UI if intended): ${r.off.join(', ')}`);
  if (r.recreatedOff.length) {
    lines.push(`recreated off (it existed before: deleted or archived in Unleash); turn it on in Unleash when that is intended: ${r.recreatedOff.join(', ')}`);
  }
  if (r.createdOff.length) {
    lines.push(`created off (Unleash's event log could not be read to tell whether it existed before); turn it on in Unleash when that is intended: ${r.createdOff.join(', ')}`);
  }
  if (r.archived.length) lines.push(`archived in Unleash (left archived; calls needing them are denied): ${r.archived.join(', ')}`);
  if (r.elsewhere.length) {
    lines.push(`exists in Unleash but not in the project the control plane reads (moved to another project?); calls needing them are denied: ${r.elsewhere.join(', ')}`);
  }
  if (r.drifted.length) lines.push(`strategies edited in Unleash (left as they are): ${r.drifted.join(', ')}`);
  if (r.webhook.others.length) {
    const list = r.webhook.others.map((o) => `${o.url ?? '(URL not recorded: registered by an older flags sync)'}${o.enabled ? '' : ' (disabled)'}`).join(', ');
    lines.push(`other killswitch webhooks in this Unleash, left alone (another installation's, or stale: delete one in the Unleash UI, Integrations, if nothing listens there): ${list}`);
  }
  return lines;
}
