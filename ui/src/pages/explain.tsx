import { useId, useState } from 'preact/hooks';
import { post } from '../api';
import { ErrorNote } from '../components/ui';

interface Explanation {
  decision: 'allow' | 'deny';
  code: string;
  message: string;
  steps: { step: string; verdict: string; code?: string; message?: string; micros: number }[];
  flags: { name: string; enabled: boolean }[];
}

/** "Why was my call denied?": runs the decision pipeline without side effects (POST /v1/decisions/explain). */
export function ExplainPage() {
  const p = useId();
  const [token, setToken] = useState('');
  const [server, setServer] = useState('');
  const [tool, setTool] = useState('');
  const [args, setArgs] = useState('{}');
  const [environment, setEnvironment] = useState('');
  const [session, setSession] = useState('');
  const [result, setResult] = useState<Explanation | null>(null);
  const [error, setError] = useState<unknown>(null);

  const submit = async (e: Event) => {
    e.preventDefault();
    setError(null);
    let parsed: unknown;
    try {
      parsed = JSON.parse(args || '{}');
    } catch {
      setError(new Error('Arguments must be a JSON object, e.g. {"path": "docs/a.md"}'));
      return;
    }
    try {
      setResult(
        await post<Explanation>('/v1/decisions/explain', {
          token_id: token.trim(),
          server: server.trim(),
          tool: tool.trim(),
          arguments: parsed,
          ...(environment ? { environment } : {}),
          ...(session.trim() ? { session_id: session.trim() } : {}),
        }),
      );
    } catch (err) {
      setResult(null);
      setError(err);
    }
  };

  return (
    <section aria-labelledby="explain-title">
      <h1 id="explain-title">Explain a denial</h1>
      <p class="lede">Runs every step of the decision for a token and a call, without counting it, halting anything or writing the audit trail, and shows where it would stop.</p>
      <form class="filters" onSubmit={submit} aria-label="Call to explain">
        <div>
          <label for={`${p}-token`}>Agent token id</label>
          <input id={`${p}-token`} class="mono" required value={token} onInput={(e) => setToken(e.currentTarget.value)} />
        </div>
        <div>
          <label for={`${p}-server`}>Server</label>
          <input id={`${p}-server`} required value={server} placeholder="filesystem" onInput={(e) => setServer(e.currentTarget.value)} />
        </div>
        <div>
          <label for={`${p}-tool`}>Tool</label>
          <input id={`${p}-tool`} required value={tool} placeholder="write_file" onInput={(e) => setTool(e.currentTarget.value)} />
        </div>
        <div>
          <label for={`${p}-env`}>Environment</label>
          <select id={`${p}-env`} value={environment} onChange={(e) => setEnvironment(e.currentTarget.value)}>
            <option value="">the token's</option>
            <option value="development">development</option>
            <option value="staging">staging</option>
            <option value="production">production</option>
          </select>
        </div>
        <div>
          <label for={`${p}-session`}>Session id (optional)</label>
          <input id={`${p}-session`} class="mono" value={session} onInput={(e) => setSession(e.currentTarget.value)} />
        </div>
        <div class="wide-field">
          <label for={`${p}-args`}>Arguments (JSON)</label>
          <textarea id={`${p}-args`} class="mono" rows={3} value={args} onInput={(e) => setArgs(e.currentTarget.value)} />
        </div>
        <div class="filter-actions">
          <button type="submit" class="primary">
            Explain
          </button>
        </div>
      </form>
      <ErrorNote error={error} />
      {result && (
        <div class="explanation" aria-live="polite">
          <p class={`verdict verdict-${result.decision}`}>
            <strong>{result.decision}</strong> <span class="mono">{result.code}</span>: {result.message}
          </p>
          <table>
            <thead>
              <tr>
                <th scope="col">Step</th>
                <th scope="col">Verdict</th>
                <th scope="col">Code</th>
                <th scope="col">Message</th>
                <th scope="col">µs</th>
              </tr>
            </thead>
            <tbody>
              {result.steps.map((s) => (
                <tr key={s.step}>
                  <td class="mono">{s.step}</td>
                  <td>{s.verdict}</td>
                  <td class="mono">{s.code ?? ''}</td>
                  <td>{s.message ?? ''}</td>
                  <td>{Math.round(s.micros)}</td>
                </tr>
              ))}
            </tbody>
          </table>
          {result.flags.length > 0 && (
            <p class="hint">
              Flags: {result.flags.map((f) => `${f.name} ${f.enabled ? 'on' : 'OFF'}`).join(', ')}
            </p>
          )}
        </div>
      )}
    </section>
  );
}
