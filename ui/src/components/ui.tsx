import type { ComponentChildren } from 'preact';
import { useCallback, useEffect, useId, useRef, useState } from 'preact/hooks';
import { ApiError } from '../api';
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

export function Time({ value, empty = '—' }: { value: string | number | null | undefined; empty?: string }) {
  if (value === null || value === undefined || value === '') return <span class="muted">{empty}</span>;
  const d = new Date(value);
  if (Number.isNaN(d.getTime())) return <span>{String(value)}</span>;
  return (
    <time dateTime={d.toISOString()} title={d.toISOString()}>
      {relative(d)}
    </time>
  );
}

function relative(d: Date): string {
  const s = Math.round((Date.now() - d.getTime()) / 1000);
  const abs = Math.abs(s);
  const fmt = (n: number, unit: string) => `${n} ${unit}${n === 1 ? '' : 's'}`;
  let text: string;
  if (abs < 45) text = 'just now';
  else if (abs < 3600) text = fmt(Math.round(abs / 60), 'minute');
  else if (abs < 86_400) text = fmt(Math.round(abs / 3600), 'hour');
  else if (abs < 30 * 86_400) text = fmt(Math.round(abs / 86_400), 'day');
  else return d.toLocaleDateString();
  if (text === 'just now') return text;
  return s >= 0 ? `${text} ago` : `in ${text}`;
}

export function ErrorNote({ error }: { error: unknown }) {
  if (!error) return null;
  const text = error instanceof ApiError ? `${error.code}: ${error.explanation}` : error instanceof Error ? error.message : String(error);
  return (
    <p class="error-note" role="alert">
      {text}
    </p>
  );
}

export function Json({ value }: { value: unknown }) {
  return <pre class="json">{JSON.stringify(value, null, 2)}</pre>;
}

export function Empty({ children }: { children: ComponentChildren }) {
  return <p class="empty">{children}</p>;
}

/** A modal built on <dialog>: focus moves into it, Escape closes it, the page behind is inert. */
export function Dialog({ title, onClose, children, wide }: { title: string; onClose: () => void; children: ComponentChildren; wide?: boolean }) {
  const ref = useRef<HTMLDialogElement>(null);
  const titleId = useId();
  useEffect(() => {
    const d = ref.current;
    if (d && !d.open) d.showModal();
    return () => d?.close();
  }, []);
  return (
    <dialog
      ref={ref}
      class={wide ? 'wide' : ''}
      aria-labelledby={titleId}
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
  const min = Math.max(props.minLength ?? 1, required ? 1 : 0);
  const fieldId = useId();
  const submit = async (e: Event) => {
    e.preventDefault();
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
    <Dialog title={props.title} onClose={props.onClose}>
      <form onSubmit={submit}>
        {props.children}
        <label for={fieldId}>{props.reasonLabel ?? 'Reason (recorded in the audit trail)'}</label>
        <textarea id={fieldId} rows={3} value={reason} required={required} minLength={min} maxLength={1000} onInput={(e) => setReason(e.currentTarget.value)} />
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
  // Arrow keys move between tabs, as the WAI-ARIA tabs pattern expects.
  const onKey = (e: KeyboardEvent, i: number) => {
    if (e.key !== 'ArrowRight' && e.key !== 'ArrowLeft') return;
    const next = (i + (e.key === 'ArrowRight' ? 1 : tabs.length - 1)) % tabs.length;
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

/** A secret shown once, with a copy button. */
export function SecretOnce({ value, label }: { value: string; label: string }) {
  const [copied, setCopied] = useState<'no' | 'yes' | 'failed'>('no');
  const inputRef = useRef<HTMLInputElement>(null);
  const id = useId();
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
        <input id={id} ref={inputRef} class="mono" readOnly value={value} data-testid="raw-token" onFocus={(e) => e.currentTarget.select()} />
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

/** Loads data for a page; `reload()` fetches again (after an action). */
export function useLoad<T>(load: () => Promise<T>, deps: unknown[]): { data: T | undefined; error: unknown; loading: boolean; reload: () => void } {
  const [data, setData] = useState<T | undefined>(undefined);
  const [error, setError] = useState<unknown>(null);
  const [loading, setLoading] = useState(true);
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
  return { data, error, loading, reload };
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
