import { useEffect, useState } from 'preact/hooks';
import { get, post, readEventStream } from '../api';
import { Empty, ErrorNote, IdRef, ReasonDialog, Time, useTokenDescriptions } from '../components/ui';
import type { Alert } from '../types';

type Show = 'open' | 'all' | 'acknowledged';

export function AlertsPage() {
  const [show, setShow] = useState<Show>('open');
  const descriptions = useTokenDescriptions();
  const [severity, setSeverity] = useState('');
  const [alerts, setAlerts] = useState<Alert[]>([]);
  const [error, setError] = useState<unknown>(null);
  const [loaded, setLoaded] = useState(false);
  const [live, setLive] = useState(false);
  const [acking, setAcking] = useState<Alert | null>(null);
  const [ackingAll, setAckingAll] = useState(false);
  const [notice, setNotice] = useState('');
  const [arrived, setArrived] = useState('');

  useEffect(() => {
    let active = true;
    const acknowledged = show === 'all' ? undefined : show === 'acknowledged';
    get<{ alerts: Alert[] }>('/v1/alerts', { acknowledged, severity: severity ? [severity] : undefined, limit: 200 }).then(
      (page) => {
        if (!active) return;
        setAlerts(page.alerts);
        setError(null);
        setLoaded(true);
      },
      (err) => active && setError(err),
    );
    return () => {
      active = false;
    };
  }, [show, severity]);

  // New alerts and acknowledgements arrive on the SSE stream, so the page stays current without polling.
  useEffect(() => {
    const abort = new AbortController();
    void readEventStream(
      '/v1/alerts/stream',
      (e) => {
        let alert: Alert;
        try {
          alert = JSON.parse(e.data) as Alert;
        } catch {
          return;
        }
        if (severity && alert.severity !== severity) return;
        // Read out by screen readers: an alert that arrives while the page is open is news.
        if (e.event === 'alert' && show !== 'acknowledged') setArrived(`New ${alert.severity} alert: ${alert.kind}. ${alert.message}`);
        setAlerts((old) => {
          const rest = old.filter((a) => a.id !== alert.id);
          if (e.event === 'alert') return show === 'acknowledged' ? old : [alert, ...rest];
          // An acknowledgement: update the row, or drop it from the list of open alerts.
          if (show === 'open') return rest;
          return old.map((a) => (a.id === alert.id ? alert : a));
        });
      },
      setLive,
      abort.signal,
    );
    return () => abort.abort();
  }, [show, severity]);

  return (
    <section aria-labelledby="alerts-title">
      <h1 id="alerts-title">Alerts</h1>
      <p class="lede">Halts, kill switches, rate limits and dependency problems. Acknowledging records who looked at it; it does not resume anything (use Sessions for that).</p>
      <div class="toolbar">
        <label>
          Show{' '}
          <select value={show} onChange={(e) => setShow(e.currentTarget.value as Show)}>
            <option value="open">not acknowledged</option>
            <option value="acknowledged">acknowledged</option>
            <option value="all">all</option>
          </select>
        </label>
        <label>
          Severity{' '}
          <select value={severity} onChange={(e) => setSeverity(e.currentTarget.value)}>
            <option value="">any</option>
            <option value="critical">critical</option>
            <option value="warning">warning</option>
            <option value="info">info</option>
          </select>
        </label>
        <span class="spacer" />
        {show === 'open' && alerts.length > 0 && (
          <button type="button" class="small" onClick={() => setAckingAll(true)}>
            Acknowledge all{severity ? ` ${severity}` : ''}
          </button>
        )}
        <span class={live ? 'live-state on' : 'live-state'} aria-live="polite">
          {live ? 'Live: new alerts appear here' : 'Connecting to the live feed…'}
        </span>
      </div>
      <ErrorNote error={error} />
      <div class="sr-only" role="status" aria-live="polite" data-testid="alert-arrived">
        {arrived}
      </div>
      {/* What the last acknowledgement did, read out by screen readers (its item is gone). */}
      <div class="notice" aria-live="polite" data-testid="alert-notice">
        {notice && <p>{notice}</p>}
      </div>
      {loaded && alerts.length === 0 && <Empty>No alerts here.</Empty>}
      <ul class="alert-list">
        {alerts.map((a) => (
          <li key={a.id} class={`alert alert-${a.severity}`} data-alert-id={a.id} data-alert-kind={a.kind}>
            <div class="alert-head">
              <span class={`sev sev-${a.severity}`}>{a.severity}</span>
              <strong class="mono">{a.kind}</strong>
              <Time value={a.created_at} />
              <span class="spacer" />
              {a.acknowledged_at ? (
                <span class="muted">
                  acknowledged by {a.acknowledged_by} <Time value={a.acknowledged_at} />
                  {a.ack_note ? `: ${a.ack_note}` : ''}
                </span>
              ) : (
                <button type="button" class="small" onClick={() => setAcking(a)} aria-label={`Acknowledge ${a.kind} alert: ${a.message.length > 80 ? `${a.message.slice(0, 79)}…` : a.message}`}>
                  Acknowledge
                </button>
              )}
            </div>
            <p>{a.message}</p>
            <p class="alert-refs">
              {a.token_id && (
                <span>
                  token <IdRef id={a.token_id} label="token id" />
                  {descriptions.get(a.token_id) && <span class="token-description"> “{descriptions.get(a.token_id)}”</span>}
                </span>
              )}
              {a.session_id && (
                <span>
                  session{' '}
                  <IdRef id={a.session_id} label="session id" href="#/sessions" />
                </span>
              )}
              {a.server && <span>server {a.server}</span>}
              {a.project_id && <span>project {a.project_id}</span>}
              {Object.entries(a.numbers).map(([k, v]) => (
                <span key={k}>
                  {k} {v}
                </span>
              ))}
            </p>
          </li>
        ))}
      </ul>
      {acking && (
        <ReasonDialog
          title={`Acknowledge ${acking.kind}?`}
          confirmLabel="Acknowledge"
          reasonRequired={false}
          reasonLabel="Note (optional)"
          onClose={() => setAcking(null)}
          onConfirm={async (note) => {
            const updated = await post<Alert>(`/v1/alerts/${acking.id}/ack`, note ? { note } : {});
            setAlerts((old) => (show === 'open' ? old.filter((a) => a.id !== updated.id) : old.map((a) => (a.id === updated.id ? updated : a))));
            setNotice(`${updated.kind} alert acknowledged.`);
          }}
        >
          <p>{acking.message}</p>
        </ReasonDialog>
      )}
      {ackingAll && (
        <ReasonDialog
          title={severity ? `Acknowledge every open ${severity} alert?` : 'Acknowledge every open alert?'}
          confirmLabel="Acknowledge all"
          reasonLabel="Note (stored with each alert and in the audit trail)"
          onClose={() => setAckingAll(false)}
          onConfirm={async (note) => {
            // Alerts raised from now on stay open; a key limited to projects leaves alerts of no project.
            const filter = severity ? { severity: [severity] } : { all: true };
            const done = await post<{ ids: string[]; remaining: number }>('/v1/alerts/ack', { ...filter, before: new Date().toISOString(), note });
            const ids = new Set(done.ids);
            setAlerts((old) => old.filter((a) => !ids.has(a.id)));
            setNotice(`${done.ids.length} alert${done.ids.length === 1 ? '' : 's'} acknowledged${done.remaining ? `; ${done.remaining} still open` : ''}.`);
          }}
        >
          <p>Every open alert{severity ? ` of severity ${severity}` : ''} you may acknowledge, not only those shown, is acknowledged with this note.</p>
        </ReasonDialog>
      )}
    </section>
  );
}
