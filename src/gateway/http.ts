import { createHash, randomUUID, timingSafeEqual } from 'node:crypto';
import { createServer, type Server as HttpServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { type InitializeRequest, isInitializeRequest } from '@modelcontextprotocol/sdk/types.js';
import { GATEWAY_CODE } from '../errors.js';
import { discardCap, discardRestOfBody } from '../http/body-limit.js';
import { headerCount, repeatedHeaderProblem } from '../http/repeated-header.js';
import { answerScrape, METRICS_PATH } from '../metrics/listener.js';
import type { AgentSession } from './agent-session.js';
import { SCOPE_CAPABILITY } from './agent-session.js';
import { ControlPlaneError } from './control-plane.js';
import type { Gateway } from './gateway.js';

// Streamable HTTP front: the agent token is the Bearer credential. A new MCP session is admitted only
// when the control plane opens a session for that token (so an unknown, revoked or malformed token is
// a 401 before anything else happens); every later request of the session must carry the same token.

/** The largest request body of a session (a tools/call's arguments): 4 MiB. */
export const MAX_BODY_BYTES = 4 * 1_048_576;
/**
 * The largest body of a request without a session, which can only be an initialize (a few hundred bytes:
 * client name, capabilities, the declared scope). It is read before the control plane has said whether
 * the token is one, so anyone who can reach the port could otherwise have 4 MiB parsed per request.
 */
export const MAX_INITIALIZE_BYTES = 64 * 1024;
/** A session no request has touched for this long is closed (clients that vanish never send DELETE). */
export const IDLE_SESSION_MS = 30 * 60_000;

export interface HttpFront {
  url: string;
  close(): Promise<void>;
}

interface Entry {
  transport: StreamableHTTPServerTransport;
  session: AgentSession;
  tokenDigest: Buffer;
  lastSeen: number;
  /**
   * POSTs of the session not yet answered: a call that waits for an approval (up to 24 h) or a slow
   * upstream is not idleness, and the sweep closed such a session under its call. A GET stream is not
   * counted: an agent that only holds one has sent nothing.
   */
  running: number;
}

const digest = (token: string) => createHash('sha256').update(token).digest();

function bearerOf(req: IncomingMessage): string | undefined {
  const h = req.headers.authorization;
  if (typeof h !== 'string') return undefined;
  return /^Bearer\s+(\S+)\s*$/i.exec(h)?.[1];
}

function jsonRpcError(res: ServerResponse, status: number, code: number, message: string, headers: Record<string, string> = {}): void {
  if (res.headersSent) return;
  res.writeHead(status, { 'content-type': 'application/json', ...headers });
  res.end(JSON.stringify({ jsonrpc: '2.0', error: { code, message }, id: null }));
}

const unauthorized = (res: ServerResponse, why: string) =>
  jsonRpcError(res, 401, -32001, `UNAUTHENTICATED: ${why}`, { 'www-authenticate': 'Bearer realm="killswitch-gateway", error="invalid_token"' });

/** GET /healthz on the HTTP front: 200 while the gateway's event loop answers (a liveness probe). */
export const HEALTH_PATH = '/healthz';

/** A body over the limit of its request: answered 413 (after the rest is read and thrown away). */
class BodyTooLarge extends Error {
  constructor(readonly limit: number, readonly initialize: boolean) {
    super('body too large');
  }
}

/** The client closed the connection before its body ended: nobody to answer. */
class ClientGone extends Error {
  constructor() {
    super('the request was closed before its body ended');
  }
}

/**
 * The request's body as JSON, or BodyTooLarge as soon as it (or its declared Content-Length) passes
 * `limit`: reading stops there, the request is left paused and unread for discardRestOfBody.
 */
function readJson(req: IncomingMessage, limit: number, initialize = false): Promise<unknown> {
  const declared = Number(req.headers['content-length']);
  if (Number.isFinite(declared) && declared > limit) return Promise.reject(new BodyTooLarge(limit, initialize));
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const stop = (then: () => void) => {
      req.off('data', onData).off('end', onEnd).off('error', onError).off('close', onClose);
      then();
    };
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size <= limit) chunks.push(chunk);
      else stop(() => {
        req.pause();
        reject(new BodyTooLarge(limit, initialize));
      });
    };
    const onEnd = () => stop(() => {
      try {
        resolve(JSON.parse(Buffer.concat(chunks).toString('utf8')));
      } catch (err) {
        reject(err);
      }
    });
    const onError = (err: Error) => stop(() => reject(err));
    const onClose = () => stop(() => reject(new ClientGone()));
    req.on('data', onData).on('end', onEnd).on('error', onError).on('close', onClose);
  });
}

export function listenHttp(gateway: Gateway, opts: { host: string; port: number; path: string; allowedHosts?: string[] | undefined; idleSessionMs?: number | undefined }): Promise<HttpFront> {
  const idleSessionMs = opts.idleSessionMs ?? IDLE_SESSION_MS;
  const entries = new Map<string, Entry>();

  async function admit(req: IncomingMessage, res: ServerResponse, token: string, body: InitializeRequest): Promise<void> {
    const ua = req.headers['user-agent'];
    let session: AgentSession | undefined;
    const transport = new StreamableHTTPServerTransport({
      sessionIdGenerator: () => randomUUID(),
      onsessioninitialized: (sid) => {
        if (session) entries.set(sid, { transport, session, tokenDigest: digest(token), lastSeen: Date.now(), running: 0 });
      },
      ...(opts.allowedHosts ? { allowedHosts: opts.allowedHosts, enableDnsRebindingProtection: true } : {}),
    });
    transport.onclose = () => {
      if (transport.sessionId) entries.delete(transport.sessionId);
      void session?.close();
    };
    session = await gateway.attach(transport, { agentToken: token, userAgent: typeof ua === 'string' ? ua : undefined });
    session.declareFromClient(body.params.capabilities.experimental?.[SCOPE_CAPABILITY]);
    try {
      await session.sessionId();
    } catch (err) {
      await session.close();
      if (err instanceof ControlPlaneError && err.failure === 'unauthenticated') return unauthorized(res, 'the agent token was refused by the control plane');
      if (err instanceof ControlPlaneError && err.failure === 'rejected') return jsonRpcError(res, err.status === 429 ? 429 : 403, -32002, `${err.code ?? GATEWAY_CODE.REFUSED}: ${err.message}`);
      return jsonRpcError(res, 503, -32003, `DEPENDENCY_UNAVAILABLE: could not open a control-plane session (${(err as Error).message})`);
    }
    try {
      await transport.handleRequest(req, res, body);
    } finally {
      // The SDK checks Accept, Content-Type and Host only now: when it refused the initialize (406, 415,
      // 403), no MCP session exists and nothing would ever close this one.
      if (!transport.sessionId) await session.close();
    }
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://gateway');
    // For an orchestrator's liveness probe (Kubernetes httpGet): the event loop answers. Nothing is asked
    // of the control plane or the upstreams: one shared by every replica must not restart them all.
    if (url.pathname === HEALTH_PATH && url.pathname !== opts.path && (req.method === 'GET' || req.method === 'HEAD')) {
      res.writeHead(200, { 'content-type': 'application/json' }).end(req.method === 'HEAD' ? undefined : JSON.stringify({ ok: true, agents: entries.size }));
      return;
    }
    // Without a key, as /healthz: the numbers hold no secret (metrics.ts), and the only credentials here
    // are agent tokens and the gateway key, neither of which Prometheus should hold. A config that gives
    // them a listener of their own (killswitch.metrics) takes them off the port agents reach.
    if (url.pathname === METRICS_PATH && url.pathname !== opts.path && req.method === 'GET' && !gateway.config.metrics) {
      // With http.allowedHosts (the DNS-rebinding protection) only those Hosts read them: otherwise a web
      // page whose name was rebound to this address could, in the browser of whoever runs the gateway.
      // /healthz stays open to every Host: a probe sends the pod's address.
      const host = req.headers.host;
      if (opts.allowedHosts && !(typeof host === 'string' && opts.allowedHosts.includes(host))) {
        return jsonRpcError(res, 403, -32000, `Invalid Host header: ${JSON.stringify(String(host ?? '').slice(0, 200))} is not in http.allowedHosts (GET ${METRICS_PATH} answers only those Hosts)`);
      }
      answerScrape(gateway.metrics, res, gateway.log);
      return;
    }
    if (url.pathname !== opts.path) return jsonRpcError(res, 404, -32600, `not found; the MCP endpoint is ${opts.path}`);
    const repeated = repeatedHeaderProblem('Authorization', headerCount(req, 'authorization'));
    if (repeated) return jsonRpcError(res, 400, -32600, `INVALID_REQUEST: ${repeated}`);
    const token = bearerOf(req);
    if (!token) return unauthorized(res, 'send the agent token as "Authorization: Bearer mcp_..."');
    const sid = req.headers['mcp-session-id'];
    if (typeof sid === 'string') {
      const entry = entries.get(sid);
      if (!entry) return jsonRpcError(res, 404, -32001, 'session not found; initialize a new one');
      if (!timingSafeEqual(entry.tokenDigest, digest(token))) return unauthorized(res, 'this session belongs to another token');
      entry.lastSeen = Date.now();
      if (req.method === 'POST') {
        entry.running++;
        res.once('close', () => {
          entry.running--;
          entry.lastSeen = Date.now();
        });
      }
      const body = req.method === 'POST' ? await readJson(req, MAX_BODY_BYTES) : undefined;
      return entry.transport.handleRequest(req, res, body);
    }
    if (req.method !== 'POST') return jsonRpcError(res, 400, -32000, 'no session: POST an initialize request first');
    const body = await readJson(req, MAX_INITIALIZE_BYTES, true);
    if (!isInitializeRequest(body)) return jsonRpcError(res, 400, -32000, 'no session: the first request must be initialize');
    return admit(req, res, token, body);
  }

  const sweep = setInterval(
    () => {
      const cutoff = Date.now() - idleSessionMs;
      for (const e of [...entries.values()]) if (e.running === 0 && e.lastSeen < cutoff) void e.transport.close().catch(() => {});
    },
    Math.min(60_000, Math.max(10, idleSessionMs / 4)),
  );
  sweep.unref();

  const server: HttpServer = createServer((req, res) => {
    handle(req, res).catch(async (err: Error) => {
      if (err instanceof BodyTooLarge) {
        // The rest is read first (as the control plane does), or a client still uploading loses the 413 to
        // a reset. A client's fault: at debug, as a parse error.
        gateway.log.debug({ limit: err.limit }, 'gateway HTTP request refused: its body is too large (413)');
        await discardRestOfBody(req, discardCap(err.limit));
        const what = err.initialize ? 'a request without a session (an initialize)' : 'a request';
        return jsonRpcError(res, 413, -32600, `INVALID_REQUEST: the body is too large: ${what} may be at most ${err.limit} bytes`, { connection: 'close' });
      }
      if (err instanceof ClientGone) return gateway.log.debug('gateway HTTP request abandoned by its client before its body ended');
      const clientFault = err instanceof SyntaxError;
      // A client's bad body is its own answer (400), not the gateway's problem: at warn, one client posting
      // garbage wrote a line per request.
      if (clientFault) gateway.log.debug({ err: err.message }, 'gateway HTTP request refused: its body is not JSON (400)');
      else gateway.log.warn({ err: err.message }, 'gateway HTTP request failed');
      jsonRpcError(res, clientFault ? 400 : 500, -32700, clientFault ? 'parse error' : err.message);
    });
  });

  return new Promise((resolveFront, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host, () => {
      const addr = server.address() as AddressInfo;
      const host = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
      gateway.log.info({ url: `http://${host}:${addr.port}${opts.path}` }, 'gateway listening (Streamable HTTP)');
      resolveFront({
        url: `http://${host}:${addr.port}${opts.path}`,
        close: async () => {
          clearInterval(sweep);
          for (const e of [...entries.values()]) await e.transport.close().catch(() => {});
          entries.clear();
          server.closeAllConnections();
          await new Promise<void>((r) => server.close(() => r()));
        },
      });
    });
  });
}
