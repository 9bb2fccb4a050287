import { createServer, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';

// A listener that serves GET /metrics and nothing else, without a key: the control plane's METRICS_PORT
// (routes.ts) and the gateway's `killswitch.metrics` (src/gateway/metrics.ts). Plain node:http, so the
// gateway does not load Fastify for it.

export const METRICS_PATH = '/metrics';

/** What renders the text exposition: the control plane's Metrics, the gateway's GatewayMetrics. */
export interface Exposition {
  readonly contentType: string;
  render(): Promise<string>;
}

export interface MetricsListener {
  address: AddressInfo;
  close(): Promise<void>;
}

/** Answers one scrape: the text exposition, or 500 if rendering failed (logged). */
export function answerScrape(metrics: Exposition, res: ServerResponse, log: Logger): void {
  metrics.render().then(
    (text) => res.writeHead(200, { 'content-type': metrics.contentType }).end(text),
    (err: unknown) => {
      log.error({ err }, 'metrics: rendering failed');
      if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' }).end('metrics unavailable\n');
    },
  );
}

export async function listenMetricsOnly(metrics: Exposition, host: string, port: number, log: Logger): Promise<MetricsListener> {
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' || path !== METRICS_PATH) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end(`only GET ${METRICS_PATH} is served here\n`);
      return;
    }
    answerScrape(metrics, res, log);
  });
  // A Prometheus scrape is short: do not let a keep-alive connection hold the shutdown.
  server.keepAliveTimeout = 1_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  return {
    address: server.address() as AddressInfo,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
