// The UI speaks only the public admin API, with the operator key the person signed in with. The key lives in
// sessionStorage: it survives a reload of the tab but not closing it, and is never sent anywhere but here.

const KEY_STORAGE = 'killswitch.operatorKey';
const SIGNED_OUT = 'killswitch:signed-out';

export function operatorKey(): string | null {
  return sessionStorage.getItem(KEY_STORAGE);
}

export function signIn(key: string): void {
  sessionStorage.setItem(KEY_STORAGE, key);
}

export function signOut(): void {
  sessionStorage.removeItem(KEY_STORAGE);
  window.dispatchEvent(new Event(SIGNED_OUT));
}

export function onSignedOut(listener: () => void): () => void {
  window.addEventListener(SIGNED_OUT, listener);
  return () => window.removeEventListener(SIGNED_OUT, listener);
}

/** An error body of the admin API: `{"error": {"code", "message", "details?"}}` (docs/errors.md). */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly details?: unknown,
  ) {
    super(message);
  }

  /** The message with the failing fields, as the API names them. */
  get explanation(): string {
    if (!Array.isArray(this.details)) return this.message;
    // Only what the message does not say already ("token_id: the token is revoked" names its field itself).
    const fields = (this.details as { field?: string; problem?: string }[])
      .filter((d) => d.field)
      .map((d) => `${d.field}: ${d.problem ?? 'invalid'}`)
      .filter((f) => !this.message.includes(f));
    return fields.length ? `${this.message} (${fields.join('; ')})` : this.message;
  }
}

function headers(extra: Record<string, string> = {}): Record<string, string> {
  const key = operatorKey();
  return key ? { authorization: `Bearer ${key}`, ...extra } : extra;
}

async function failure(res: Response): Promise<ApiError> {
  let body: { error?: { code?: string; message?: string; details?: unknown } } = {};
  try {
    body = await res.json();
  } catch {
    // Not JSON (a proxy's error page): the status says enough.
  }
  const err = new ApiError(res.status, body.error?.code ?? `HTTP_${res.status}`, body.error?.message ?? res.statusText, body.error?.details);
  // A revoked or expired operator key: back to the sign-in form rather than a page of errors.
  if (res.status === 401) signOut();
  return err;
}

export type Query = Record<string, string | number | boolean | undefined | null | string[]>;

export function queryString(q: Query = {}): string {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(q)) {
    if (v === undefined || v === null || v === '') continue;
    if (Array.isArray(v)) for (const item of v) p.append(k, item);
    else p.append(k, String(v));
  }
  const s = p.toString();
  return s ? `?${s}` : '';
}

export async function api<T>(method: 'GET' | 'POST' | 'DELETE', path: string, body?: unknown): Promise<T> {
  const res = await fetch(path, {
    method,
    headers: headers(body === undefined ? {} : { 'content-type': 'application/json' }),
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  if (!res.ok) throw await failure(res);
  if (res.status === 204) return undefined as T;
  return (await res.json()) as T;
}

export const get = <T>(path: string, q?: Query) => api<T>('GET', path + queryString(q));
export const post = <T>(path: string, body?: unknown) => api<T>('POST', path, body);

/**
 * Downloads an export. The admin API wants the Authorization header, which a plain link cannot send, so
 * the file is fetched and handed to the browser as a Blob.
 */
export async function download(path: string, q: Query, fallbackName: string): Promise<string> {
  const res = await fetch(path + queryString(q), { headers: headers() });
  if (!res.ok) throw await failure(res);
  const disposition = res.headers.get('content-disposition') ?? '';
  const name = /filename="([^"]+)"/.exec(disposition)?.[1] ?? fallbackName;
  const url = URL.createObjectURL(await res.blob());
  const a = document.createElement('a');
  a.href = url;
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
  return name;
}

export interface StreamEvent {
  event: string;
  data: string;
  id?: string;
}

/**
 * Reads a Server-Sent Events stream with fetch (EventSource cannot send the Authorization header), and
 * reconnects with Last-Event-ID so nothing raised in between is missed. Ends when `signal` aborts.
 */
export async function readEventStream(path: string, onEvent: (e: StreamEvent) => void, onState: (live: boolean) => void, signal: AbortSignal): Promise<void> {
  let lastId: string | undefined;
  let retryMs = 3000;
  while (!signal.aborted) {
    try {
      const res = await fetch(path, { headers: headers({ accept: 'text/event-stream', ...(lastId ? { 'last-event-id': lastId } : {}) }), signal });
      if (!res.ok || !res.body) throw await failure(res);
      onState(true);
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value.replace(/\r\n/g, '\n');
        let end = buffer.indexOf('\n\n');
        while (end >= 0) {
          const frame = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const parsed: StreamEvent = { event: 'message', data: '' };
          const data: string[] = [];
          for (const line of frame.split('\n')) {
            if (line.startsWith(':')) continue;
            const colon = line.indexOf(':');
            const field = colon < 0 ? line : line.slice(0, colon);
            const val = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
            if (field === 'event') parsed.event = val;
            else if (field === 'data') data.push(val);
            else if (field === 'id') parsed.id = val;
            else if (field === 'retry' && /^\d+$/.test(val)) retryMs = Number(val);
          }
          if (parsed.id) lastId = parsed.id;
          if (data.length) onEvent({ ...parsed, data: data.join('\n') });
          end = buffer.indexOf('\n\n');
        }
      }
    } catch (err) {
      if (signal.aborted) return;
      if (err instanceof ApiError && err.status === 401) return;
    }
    onState(false);
    await new Promise((r) => setTimeout(r, retryMs));
  }
}
