import { createServer, type IncomingMessage, request, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

/**
 * A real HTTP proxy in front of the run's unleash-server, for tests of what the control plane does when
 * Unleash misbehaves: it forwards everything, except that it can answer errors to the next `failNext`
 * flag fetches (and to everything meanwhile: a failing load balancer), hold every request without an
 * answer (`hang`: an Unleash stopped with SIGSTOP), or hold only the client flag fetches (`holdFetches`:
 * a slow Unleash), until release().
 */
export class UnleashProxy {
  failNext = 0;
  /** What the failing fetches are answered. */
  failStatus = 502;
  hang = false;
  holdFetches = false;
  /** The requests held without an answer. */
  readonly held: ServerResponse[] = [];
  /** Every flag fetch that reached the proxy and was answered: when, and with what status. */
  readonly fetches: Array<{ at: number; status: number }> = [];
  private readonly server: Server;

  constructor(private readonly target: URL) {
    this.server = createServer((req, res) => this.handle(req, res));
  }

  /** The proxy's URL for UNLEASH_URL (the target's path kept). */
  async listen(): Promise<string> {
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', r));
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}${this.target.pathname}`;
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((r) => this.server.close(() => r()));
  }

  /** Requests from now on pass; the held ones fail (the SDK fetches again at its next poll). */
  release(): void {
    this.hang = false;
    this.holdFetches = false;
    for (const res of this.held.splice(0)) res.destroy();
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const isFetch = req.method === 'GET' && (req.url ?? '').includes('/client/features');
    if (this.hang || (this.holdFetches && isFetch)) {
      req.resume();
      this.held.push(res);
      return;
    }
    const record = (status: number) => {
      if (isFetch) this.fetches.push({ at: performance.now(), status });
    };
    if (this.failNext > 0) {
      if (isFetch) this.failNext--;
      record(this.failStatus);
      req.resume();
      res.writeHead(this.failStatus, { 'content-type': 'text/plain' }).end(this.failStatus === 502 ? 'Bad Gateway' : 'Refused');
      return;
    }
    const upstream = request({ host: this.target.hostname, port: this.target.port, method: req.method, path: req.url, headers: req.headers }, (up) => {
      record(up.statusCode ?? 0);
      res.writeHead(up.statusCode ?? 502, up.headers);
      up.pipe(res);
    });
    upstream.on('error', () => res.writeHead(502).end());
    req.pipe(upstream);
  }
}
