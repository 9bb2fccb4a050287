import type { ComponentChildren } from 'preact';
import { useCallback, useEffect, useId, useLayoutEffect, useMemo, useRef, useState } from 'preact/hooks';
import { ApiError, get } from '../api';
import { visibleJson } from '../json-text';
import type { TokenType } from '../types';

export const TYPE_LABEL: Record<TokenType, string> = { ro: 'read-only', rw: 'write', admin: 'admin' };

/** The warning sign on tokens that can change data (seed 000 US-010). */
export function WarningIcon({ label }: { label: string }) {
  return (
    <svg class="warning-icon" viewBox="0 0 16 16" width="14" height="14" role="img" aria-label={label}>
      <title>{label}</title>
      <path d="M8 1.5 15 14H1L8 1.5Z" fill="currentColor" />
      <path d="M8 6v4" stroke="#fff" stroke-width="1.6" stroke-linecap="round" />
      <circle cx="8" cy="12" r="0.9" fill="#fff" />
    </svg>
  );
}

/** A badge per token type, each in its own colour; write and admin carry the warning icon. */
export function TokenBadge({ type }: { type: string | null }) {
  if (type !== 'ro' && type !== 'rw' && type !== 'admin') return <span class="badge badge-none">{type ?? '—'}</span>;
  return (
    <span class={`badge badge-${type}`} data-token-type={type}>
      {type !== 'ro' && <WarningIcon label={type === 'admin' ? 'Full access, including deletes and secrets' : 'Can modify data'} />}
      {TYPE_LABEL[type]}
    </span>
  );
}

/**
 * A moment as the API, the CLI, CSV exports and alerts give it: UTC, said so, with how long ago as
 * secondary text. `ms` adds milliseconds (incident review wants exact order).
 */
export function Time({ value, empty = '—', ms = false }: { value: string | number | null | undefined; empty?: string; ms?: boolean }) {
  if (value === null || value === undefined || value === '') return <span class="muted">{empty}</span>;
  const d = new Date(value);
  if (Number.isNaN(d.getTime())) return <span>{String(value)}</span>;
  const rel = relative(d);
  return (
    <time class="time" dateTime={d.toISOString()} title={`${d.toISOString()} (${rel})`}>
      <span class="mono">{utcText(d, ms)}</span> <span class="time-rel">{rel}</span>
    </time>
  );
}

/** `2025-03-04 13:05:09 UTC` (with `.123` before UTC when `ms`). */
export function utcText(d: Date, ms = false): string {
  const iso = d.toISOString();
  return `${iso.slice(0, 10)} ${iso.slice(11, ms ? 23 : 19)} UTC`;
}

function relative(d: Date): string {
  const s = Math.round((Date.now() - d.getTime()) / 1000);
  const abs = Math.abs(s);
  const fmt = (n: number, unit: string) => `${n} ${unit}${n === 1 ? '' : 's'}`;
  let text: string;
  if (abs < 45) return 'just now';
  if (abs < 3600) text = fmt(Math.round(abs / 60), 'minute');
  else if (abs < 86_400) text = fmt(Math.round(abs / 3600), 'hour');
  else text = fmt(Math.round(abs / 86_400), 'day');
  return s >= 0 ? `${text} ago` : `in ${text}`;
}

/** Under datetime-local inputs (the browser's own time zone), when what the page shows is in UTC. */
export function LocalZoneHint() {
  const offset = -new Date().getTimezoneOffset();
  const zone = offset === 0 ? 'UTC' : `UTC${offset > 0 ? '+' : '−'}${String(Math.floor(Math.abs(offset) / 60)).padStart(2, '0')}:${String(Math.abs(offset) % 60).padStart(2, '0')}`;
  return <p class="hint wide-field">From and To are in this browser's time zone ({zone}); times shown are UTC.</p>;
}

/**
 * A shortened id with a button that copies the whole one (explain, `killswitch kill --token` and the
 * filters want the full UUID); the full id is also in the button's label. `label` says what it is
 * ("token", "session") for screen readers.
 */
export function IdRef({ id, label = 'id', text, href }: { id: string | null | undefined; label?: string; text?: string; href?: string }) {
  const [copied, setCopied] = useState<'no' | 'yes' | 'failed'>('no');
  if (!id) return <span class="muted">—</span>;
  const copy = async (e: Event) => {
    // Inside clickable rows: copying does not also open or select the row.
    e.stopPropagation();
    try {
      await navigator.clipboard.writeText(id);
      setCopied('yes');
    } catch {
      setCopied('failed');
    }
  };
  return (
    <span class="id-ref" data-id={id}>
      {href ? (
        <a class="mono" href={href} title={id}>
          {text ?? shortId(id)}
        </a>
      ) : (
        <span class="mono" title={id}>
          {text ?? shortId(id)}
        </span>
      )}
      {/* An SVG, not the ⧉ character (Debian's default fonts drew it as an empty box); 24 px to hit (WCAG 2.5.8). */}
      <button type="button" class="copy-id" aria-label={`Copy ${label} ${id}`} title={`Copy the full ${label} (${id})`} onClick={copy}>
        {copied === 'yes' ? (
          <svg viewBox="0 0 16 16" width="14" height="14" aria-hidden="true" focusable="false">
            <path d="M3 8.5l3 3 7-7" fill="none" stroke="currentColor" stroke-width="2" />
          </svg>
        ) : (
          <svg viewBox="0 0 16 16" width="14" height="14" aria-hidden="true" focusable="false">
            <rect x="5" y="5" width="9" height="9" rx="1.5" fill="none" stroke="currentColor" stroke-width="1.5" />
            <path d="M11 3.5V3a1 1 0 0 0-1-1H3a1 1 0 0 0-1 1v7a1 1 0 0 0 1 1h.5" fill="none" stroke="currentColor" stroke-width="1.5" />
          </svg>
        )}
      </button>
      <span class="sr-only" role="status">
        {copied === 'yes' ? 'copied' : ''}
      </span>
      {/* Clipboard refused (plain http to another host): the full id, selectable, to copy by hand. */}
      {copied === 'failed' && (
        <input class="mono id-full" readOnly value={id} aria-label={`Full ${label}`} size={36} ref={(el) => el?.select()} onFocus={(e) => e.currentTarget.select()} />
      )}
    </span>
  );
}

export function ErrorNote({ error, id }: { error: unknown; id?: string }) {
  if (!error) return null;
  const text = error instanceof ApiError ? `${error.code}: ${error.explanation}` : error instanceof Error ? error.message : String(error);
  return (
    <p class="error-note" role="alert" id={id}>
      {text}
    </p>
  );
}

/** The fields an API error names (`details[].field`), to mark those inputs invalid. */
export function failingFields(error: unknown): Set<string> {
  if (!(error instanceof ApiError) || !Array.isArray(error.details)) return new Set();
  return new Set(error.details.map((d: { field?: unknown }) => (typeof d?.field === 'string' ? d.field : '')).filter(Boolean));
}

/**
 * `invalid(field)`: the props that mark an input the API refused (`aria-invalid`) and point it at the
 * error note with id `errorId`, so a screen reader reads which field is wrong and why; {} otherwise.
 */
/**
 * What a form's submit found missing (field id → what to do). The submit button stays enabled (a disabled
 * one says nothing about why): `refuse()`, called on submit, is true when something is missing, focuses
 * the first such field and from then on `note` says what still is (`${notYet}: …`, for the ErrorNote at
 * `errorId`) and `field(id)` marks each (aria-invalid, described by that note and `describedBy`).
 */
export function useMissingFields(gaps: ReadonlyMap<string, string>, errorId: string, notYet: string) {
  // Set by a submit with something missing: from then on the note says what is still missing.
  const [tried, setTried] = useState(false);
  const shown = tried ? gaps : new Map<string, string>();
  return {
    note: shown.size > 0 ? new Error(`${notYet}: ${[...shown.values()].join(' ')}`) : null,
    field: (id: string, describedBy?: string) => ({
      ...(describedBy ? { 'aria-describedby': describedBy } : {}),
      ...(shown.has(id) ? { 'aria-invalid': true as const, 'aria-describedby': [describedBy, errorId].filter(Boolean).join(' ') } : {}),
    }),
    refuse: (): boolean => {
      if (gaps.size === 0) {
        setTried(false);
        return false;
      }
      setTried(true);
      // To the first field missing, so Space or typing fixes it at once.
      document.getElementById([...gaps.keys()][0] ?? '')?.focus();
      return true;
    },
    reset: () => setTried(false),
  };
}

export function invalidMarker(error: unknown, errorId: string, local: ReadonlySet<string> = new Set()) {
  const failing = new Set([...failingFields(error), ...local]);
  return (field: string) => (failing.has(field) ? { 'aria-invalid': true as const, 'aria-describedby': errorId } : {});
}

/** JSON an operator reads to decide: invisible and text-reordering characters shown as \u escapes (json-text.ts). */
export function Json({ value }: { value: unknown }) {
  return <pre class="json">{visibleJson(value)}</pre>;
}

export function Empty({ children }: { children: ComponentChildren }) {
  return <p class="empty">{children}</p>;
}

/**
 * A modal built on <dialog>: focus moves into it, Escape closes it, the page behind is inert. When it
 * closes, focus goes back to what opened it, or, when that is gone (the row of a revoked token, a lifted
 * kill), to the page's main area, so the next Tab does not start from the top of the document.
 * A layout effect: it opens the dialog in the render that adds it, and its cleanup (close, focus back)
 * runs before the <dialog> leaves the document. Preact 11 runs a plain effect's cleanup after the next
 * paint: the focused field went with the dialog, so the focus sat on <body> until then (a frame, longer
 * on a loaded machine: seen in CI as a focus check that found <body>).
 */
export function Dialog({ title, onClose, children, wide, describedBy }: { title: string; onClose: () => void; children: ComponentChildren; wide?: boolean; describedBy?: string | undefined }) {
  const ref = useRef<HTMLDialogElement>(null);
  const titleId = useId();
  useLayoutEffect(() => {
    const d = ref.current;
    const opener = document.activeElement instanceof HTMLElement ? document.activeElement : null;
    if (d && !d.open) d.showModal();
    return () => {
      d?.close();
      const main = document.getElementById('main');
      if (!opener?.isConnected) {
        main?.focus();
        return;
      }
      opener.focus();
      // The opener's row may go with the list's reload that follows the action (a revoked token, a lifted
      // kill): focus would then fall to <body>. Watch for that for a while and move it to the main area.
      const watch = new MutationObserver(() => {
        if (opener.isConnected) return;
        watch.disconnect();
        if (document.activeElement === document.body || document.activeElement === null) main?.focus();
      });
      watch.observe(document.body, { childList: true, subtree: true });
      setTimeout(() => watch.disconnect(), 15_000);
    };
  }, []);
  return (
    <dialog
      ref={ref}
      class={wide ? 'wide' : ''}
      aria-labelledby={titleId}
      aria-describedby={describedBy}
      onCancel={(e) => {
        e.preventDefault();
        onClose();
      }}
    >
      <div class="dialog-head">
        <h2 id={titleId}>{title}</h2>
        <button type="button" class="icon-button" aria-label="Close" onClick={onClose}>
          ×
        </button>
      </div>
      {children}
    </dialog>
  );
}

/**
 * "Are you sure?" with a reason, for revokes, resumes, acknowledgements and approvals: the reason goes to
 * the audit trail with the action.
 */
export function ReasonDialog(props: {
  title: string;
  children?: ComponentChildren;
  confirmLabel: string;
  danger?: boolean;
  reasonLabel?: string;
  reasonRequired?: boolean;
  /** Shortest reason the API accepts. */
  minLength?: number;
  onConfirm: (reason: string) => Promise<unknown>;
  onClose: () => void;
}) {
  const [reason, setReason] = useState('');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const required = props.reasonRequired ?? true;
  // An optional reason may be left empty: onConfirm then gets '' and sends no reason at all.
  const min = required ? Math.max(props.minLength ?? 1, 1) : 0;
  const fieldId = useId();
  const aboutId = useId();
  const submit = async (e: Event) => {
    e.preventDefault();
    if (busy || reason.trim().length < min) return;
    setBusy(true);
    setError(null);
    try {
      await props.onConfirm(reason.trim());
      props.onClose();
    } catch (err) {
      setError(err);
      setBusy(false);
    }
  };
  return (
    <Dialog title={props.title} onClose={props.onClose} describedBy={props.children ? aboutId : undefined}>
      <form onSubmit={submit}>
        {props.children && <div id={aboutId}>{props.children}</div>}
        <label for={fieldId}>{props.reasonLabel ?? 'Reason (recorded in the audit trail)'}</label>
        {/* Focused first (not the dialog's × button); one line, so Enter submits as in the other forms. */}
        <textarea
          id={fieldId}
          rows={3}
          value={reason}
          required={required}
          minLength={min}
          maxLength={1000}
          autofocus
          onInput={(e) => setReason(oneLine(e.currentTarget.value))}
          onKeyDown={(e) => {
            if (e.key === 'Enter' && !e.isComposing) {
              e.preventDefault();
              e.currentTarget.form?.requestSubmit();
            }
          }}
        />
        <ErrorNote error={error} />
        <div class="actions">
          <button type="button" onClick={props.onClose}>
            Cancel
          </button>
          <button type="submit" class={props.danger ? 'danger' : 'primary'} disabled={busy || reason.trim().length < min}>
            {props.confirmLabel}
          </button>
        </div>
      </form>
    </Dialog>
  );
}

export function Tabs<T extends string>({ tabs, current, onChange, label }: { tabs: { id: T; label: string }[]; current: T; onChange: (id: T) => void; label: string }) {
  const refs = useRef<(HTMLButtonElement | null)[]>([]);
  // Arrow keys move between tabs, Home and End to the first and last, as the WAI-ARIA tabs pattern expects.
  const onKey = (e: KeyboardEvent, i: number) => {
    const moves: Record<string, number> = { ArrowRight: (i + 1) % tabs.length, ArrowLeft: (i + tabs.length - 1) % tabs.length, Home: 0, End: tabs.length - 1 };
    const next = moves[e.key];
    if (next === undefined) return;
    e.preventDefault();
    const tab = tabs[next];
    if (!tab) return;
    onChange(tab.id);
    refs.current[next]?.focus();
  };
  return (
    <div class="tabs" role="tablist" aria-label={label}>
      {tabs.map((t, i) => (
        <button
          key={t.id}
          ref={(el) => {
            refs.current[i] = el;
          }}
          type="button"
          role="tab"
          id={`tab-${t.id}`}
          aria-selected={t.id === current}
          aria-controls={t.id === current ? `tabpanel-${t.id}` : undefined}
          tabIndex={t.id === current ? 0 : -1}
          onClick={() => onChange(t.id)}
          onKeyDown={(e) => onKey(e, i)}
        >
          {t.label}
        </button>
      ))}
    </div>
  );
}

/**
 * A secret shown once, with a copy button. Gone once the page is left: a browser keeps a page it leaves
 * (the back/forward cache) and Back would show the secret again to whoever sits at the screen next, so
 * on `pagehide` the field is emptied at once (before the page is stored) and a note takes its place.
 */
export function SecretOnce({ value, label }: { value: string; label: string }) {
  const [copied, setCopied] = useState<'no' | 'yes' | 'failed'>('no');
  const [left, setLeft] = useState(false);
  const inputRef = useRef<HTMLInputElement>(null);
  const id = useId();
  useEffect(() => {
    const hide = () => {
      if (inputRef.current) inputRef.current.value = '';
      setLeft(true);
    };
    window.addEventListener('pagehide', hide);
    return () => window.removeEventListener('pagehide', hide);
  }, []);
  if (left) {
    return (
      <div class="secret-once">
        <p role="status" data-testid="secret-gone">
          <strong>{label}: no longer shown.</strong> It was hidden when you left this page and cannot be shown again (only a keyed hash is stored). If you did not copy it, revoke it and create another.
        </p>
      </div>
    );
  }
  const copy = async () => {
    try {
      await navigator.clipboard.writeText(value);
      setCopied('yes');
    } catch {
      // Clipboard permission refused: select the text so Ctrl+C works.
      inputRef.current?.select();
      setCopied('failed');
    }
  };
  return (
    <div class="secret-once">
      <label for={id}>{label}</label>
      <div class="secret-row">
        <input id={id} ref={inputRef} class="mono" readOnly autocomplete="off" value={value} data-testid="raw-token" onFocus={(e) => e.currentTarget.select()} />
        <button type="button" class="primary" onClick={copy}>
          Copy
        </button>
      </div>
      <p class="hint" aria-live="polite">
        {copied === 'yes' ? 'Copied to the clipboard.' : copied === 'failed' ? 'Could not reach the clipboard: the text is selected, press Ctrl+C.' : ''} This is the only time it is shown: only a keyed hash is stored.
      </p>
    </div>
  );
}

/**
 * Loads data for a page; `reload()` fetches again (after an action). With `refreshMs`, it also fetches
 * again that often while the tab is visible (none while hidden, one at once when it is shown again), so
 * a halt or a kill made elsewhere (the CLI, another operator) shows up without a reload. The data shown
 * stays until the new answer replaces it, so dialogs and what is typed in them are kept.
 */
export function useLoad<T>(
  load: () => Promise<T>,
  deps: unknown[],
  opts: { refreshMs?: number } = {},
): { data: T | undefined; error: unknown; loading: boolean; reload: () => void; updatedAt: Date | null } {
  const [data, setData] = useState<T | undefined>(undefined);
  const [error, setError] = useState<unknown>(null);
  const [loading, setLoading] = useState(true);
  const [updatedAt, setUpdatedAt] = useState<Date | null>(null);
  const [tick, setTick] = useState(0);
  // The caller lists what the loader depends on (deps), as with useEffect.
  useEffect(() => {
    let live = true;
    setLoading(true);
    load().then(
      (d) => {
        if (!live) return;
        setData(d);
        setError(null);
        setLoading(false);
        setUpdatedAt(new Date());
      },
      (err) => {
        if (!live) return;
        setError(err);
        setLoading(false);
      },
    );
    return () => {
      live = false;
    };
  }, [...deps, tick]);
  const reload = useCallback(() => setTick((t) => t + 1), []);
  const refreshMs = opts.refreshMs;
  useEffect(() => {
    if (!refreshMs) return;
    let timer: ReturnType<typeof setInterval> | undefined;
    const start = () => {
      if (timer === undefined) timer = setInterval(reload, refreshMs);
    };
    const stop = () => {
      if (timer !== undefined) clearInterval(timer);
      timer = undefined;
    };
    const onVisibility = () => {
      if (document.visibilityState === 'visible') {
        reload();
        start();
      } else stop();
    };
    if (document.visibilityState === 'visible') start();
    document.addEventListener('visibilitychange', onVisibility);
    return () => {
      stop();
      document.removeEventListener('visibilitychange', onVisibility);
    };
  }, [refreshMs, reload]);
  return { data, error, loading, reload, updatedAt };
}

/** How often the pages an incident is watched on (Sessions, Kills, Tokens) fetch again on their own. */
export const REFRESH_MS = 5000;

/** "Updated 13:05:09 UTC" and a Refresh button, for a page that refreshes itself. */
export function Freshness({ list }: { list: { updatedAt: Date | null; loading: boolean; reload: () => void } }) {
  return (
    <span class="freshness">
      <span class="hint" data-testid="updated-at" aria-live="off">
        {list.updatedAt ? `Updated ${utcText(list.updatedAt).slice(11)}, every ${REFRESH_MS / 1000} s` : 'Loading…'}
      </span>{' '}
      <button type="button" onClick={list.reload}>
        Refresh
      </button>
    </span>
  );
}

/** A lift or resume the list showed as possible, but someone else did first (409 CONFLICT). */
export function isConflict(err: unknown): err is ApiError {
  return err instanceof ApiError && err.code === 'CONFLICT';
}

/**
 * Agent token id → description, for pages that show token ids (GET /v1/keys, revoked ones too).
 * Best effort: without it the pages show ids alone.
 */
export function useTokenDescriptions(): Map<string, string> {
  // Refreshed like the pages, so a token made during the incident gets its description too.
  const tokens = useLoad(() => get<{ keys: { id: string; description: string }[] }>('/v1/keys', { limit: 500 }), [], { refreshMs: REFRESH_MS });
  return useMemo(() => new Map((tokens.data?.keys ?? []).filter((k) => k.description).map((k) => [k.id, k.description])), [tokens.data]);
}

/** Ids are UUIDv7: the first characters are a timestamp shared by ids made together, so show the end. */
export function shortId(id: string | null | undefined): string {
  if (!id) return '—';
  return id.length > 13 ? `…${id.slice(-8)}` : id;
}

export function percent(rate: number | null | undefined): string {
  if (rate === null || rate === undefined) return '—';
  return `${(rate * 100).toFixed(rate === 1 || rate === 0 ? 0 : 1)}%`;
}

/** datetime-local value → ISO string for the API (or undefined when empty). */
export function isoFromLocal(value: string): string | undefined {
  if (!value) return undefined;
  const d = new Date(value);
  return Number.isNaN(d.getTime()) ? undefined : d.toISOString();
}

/**
 * A reason as the API takes it: one line (it refuses line breaks and tabs in reasons, which would forge
 * lines where the reason is shown: denials, alerts, the CLI). Typed or pasted breaks become spaces here,
 * so a kill or resume at 3 a.m. never fails on a pasted paragraph.
 */
export function oneLine(text: string): string {
  return text.replace(/[\r\n\t\u2028\u2029]+/g, ' ');
}
