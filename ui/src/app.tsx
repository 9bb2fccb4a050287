import { useEffect, useLayoutEffect, useRef, useState } from 'preact/hooks';
import { get, onSignedOut, operatorKey, signIn, signOut } from './api';
import { ErrorNote, useLoad } from './components/ui';
import { visibleText } from './json-text';
import { AlertsPage } from './pages/alerts';
import { ApprovalsPage } from './pages/approvals';
import { AuditPage } from './pages/audit';
import { ExplainPage } from './pages/explain';
import { FlagsPage } from './pages/flags';
import { GrantsPage } from './pages/grants';
import { KillsPage } from './pages/kills';
import { SessionsPage } from './pages/sessions';
import { TimelinePage } from './pages/timeline';
import { TokensPage } from './pages/tokens';
import { ToolsPage } from './pages/tools';
import { UsagePage } from './pages/usage';
import type { CurrentOperatorKey } from './types';

// Hash routes: the control plane serves one static index.html, and a reload keeps the page.
const PAGES = [
  { id: 'tokens', label: 'Tokens', render: () => <TokensPage /> },
  { id: 'audit', label: 'Audit', render: () => <AuditPage /> },
  { id: 'alerts', label: 'Alerts', render: () => <AlertsPage /> },
  { id: 'sessions', label: 'Sessions', render: () => <SessionsPage /> },
  { id: 'kills', label: 'Kills', render: () => <KillsPage /> },
  { id: 'timeline', label: 'Incident timeline', render: () => <TimelinePage /> },
  { id: 'approvals', label: 'Approvals', render: () => <ApprovalsPage /> },
  { id: 'usage', label: 'Usage', render: () => <UsagePage /> },
  { id: 'flags', label: 'Flags', render: () => <FlagsPage /> },
  { id: 'tools', label: 'Tool definitions', render: () => <ToolsPage /> },
  { id: 'grants', label: 'Grants', render: () => <GrantsPage /> },
  { id: 'explain', label: 'Explain a denial', render: () => <ExplainPage /> },
] as const;

function currentPage(): string {
  const id = location.hash.replace(/^#\/?/, '').split('?')[0] ?? '';
  return PAGES.some((p) => p.id === id) ? id : 'tokens';
}

export function App() {
  const [signedIn, setSignedIn] = useState(() => operatorKey() !== null);
  const [page, setPage] = useState(currentPage);

  useEffect(() => onSignedOut(() => setSignedIn(false)), []);
  useEffect(() => {
    const onHash = () => setPage(currentPage());
    window.addEventListener('hashchange', onHash);
    return () => window.removeEventListener('hashchange', onHash);
  }, []);
  useEffect(() => {
    // Signed out, the screen is the sign-in form whatever the address says.
    const label = signedIn ? (PAGES.find((p) => p.id === page)?.label ?? '') : 'Sign in';
    document.title = `${label} · MCP kill switch`;
  }, [page, signedIn]);
  // After signing in the form, and the focused field in it, is gone: the focus goes to the page signed in
  // to, not <body>.
  // Layout effects (here and below): at once, in the render that shows the page, not after the next paint.
  const wasSignedIn = useRef(signedIn);
  useLayoutEffect(() => {
    if (signedIn && !wasSignedIn.current) document.getElementById('main')?.focus();
    wasSignedIn.current = signedIn;
  }, [signedIn]);
  // After a move to another page (not the first render), the focus goes to its main area, so a screen
  // reader announces the new page and Tab continues from it rather than from the navigation link.
  const firstPage = useRef(true);
  useLayoutEffect(() => {
    if (firstPage.current) {
      firstPage.current = false;
      return;
    }
    document.getElementById('main')?.focus();
  }, [page]);

  if (!signedIn)
    return (
      <SignIn onSignedIn={() => setSignedIn(true)} />
    );
  const current = PAGES.find((p) => p.id === page) ?? PAGES[0];
  return (
    <div class="layout">
      {/* A button, not a #main link: the router reads the hash as a page name and would open Tokens. */}
      <button type="button" class="skip-link" onClick={() => document.getElementById('main')?.focus()}>
        Skip to content
      </button>
      <header class="top">
        <span class="brand">
          <span class="brand-mark" aria-hidden="true" />
          MCP kill switch
        </span>
        <nav aria-label="Pages">
          <ul>
            {PAGES.map((p) => (
              <li key={p.id}>
                <a href={`#/${p.id}`} aria-current={p.id === current.id ? 'page' : undefined}>
                  {p.label}
                </a>
              </li>
            ))}
          </ul>
        </nav>
        <SignedInAs />
        <button type="button" class="sign-out" onClick={() => signOut()}>
          Sign out
        </button>
      </header>
      <main id="main" tabIndex={-1}>
        {current.render()}
      </main>
    </div>
  );
}

const ROLE_HINT = { viewer: 'reads only', operator: 'reads and acts', owner: 'reads, acts and manages operator keys' } as const;

/** Under a day left: the header says when the key stops working, so nobody finds out mid-incident. */
const EXPIRY_WARNING_MS = 24 * 3_600_000;

function expiresText(expiresAt: string | null): string | null {
  if (expiresAt === null) return null;
  const left = Date.parse(expiresAt) - Date.now();
  if (left > EXPIRY_WARNING_MS) return null;
  const hours = Math.floor(left / 3_600_000);
  return hours >= 1 ? `expires in ${hours} h` : `expires in ${Math.max(1, Math.ceil(left / 60_000))} min`;
}

/** Which key this browser holds: its name, role and projects (a team key sees only its projects' data). */
function SignedInAs() {
  // Asked again every minute, for the expiry; a key revoked meanwhile signs out (any 401 does).
  const me = useLoad(() => get<CurrentOperatorKey>('/v1/operator-keys/me'), [], { refreshMs: 60_000 });
  const key = me.data;
  if (!key) return null;
  const expires = expiresText(key.expires_at);
  const projects = key.projects === null ? 'every project' : `projects ${key.projects.join(', ')}`;
  return (
    <span class="signed-in-as" data-testid="signed-in-as">
      <span class="muted-on-dark">Signed in as</span> <strong>{visibleText(key.name)}</strong>{' '}
      <span title={ROLE_HINT[key.role]}>
        ({key.role}, {visibleText(projects)})
      </span>
      {expires && (
        <span class="key-expiry" role="status">
          {' '}
          · {expires}
        </span>
      )}
    </span>
  );
}

function SignIn({ onSignedIn }: { onSignedIn: () => void }) {
  const [key, setKey] = useState('');
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  const submit = async (e: Event) => {
    e.preventDefault();
    const trimmed = key.trim();
    if (!/^ksop_/.test(trimmed)) {
      setError(new Error('An operator key starts with ksop_. Agent tokens (mcp_...) and gateway keys (ksgw_...) are not accepted here.'));
      return;
    }
    setBusy(true);
    setError(null);
    signIn(trimmed);
    try {
      // Any viewer route proves the key; this one is the key itself.
      await get('/v1/operator-keys/me');
      onSignedIn();
    } catch (err) {
      signOut();
      setError(err);
    } finally {
      setBusy(false);
    }
  };
  return (
    <main class="sign-in" id="main">
      <form onSubmit={submit} aria-labelledby="sign-in-title">
        <h1 id="sign-in-title">
          <span class="brand-mark" aria-hidden="true" /> MCP kill switch
        </h1>
        <p>Sign in with an operator key. It is kept in this browser tab only (sessionStorage) and sent to this control plane alone.</p>
        <label for="operator-key">Operator key</label>
        <input
          id="operator-key"
          type="password"
          autoComplete="off"
          spellcheck={false}
          placeholder="ksop_..."
          value={key}
          required
          {...(error ? { 'aria-invalid': true, 'aria-describedby': 'sign-in-error' } : {})}
          onInput={(e) => setKey(e.currentTarget.value)}
        />
        <ErrorNote error={error} id="sign-in-error" />
        <button type="submit" class="primary" disabled={busy || !key.trim()}>
          Sign in
        </button>
        <p class="hint">
          No key? The first start writes an owner key to <code>DATA_DIR/owner-key</code> (readable only by the control plane's user; docs/operations.md, “First start: the owner key”). Where
          the control plane runs, <code>node bin/killswitch.js operators create --role owner --name you</code> makes another.
        </p>
      </form>
    </main>
  );
}
