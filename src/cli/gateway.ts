import { pino } from 'pino';
import { gatewayReferenceEnv } from '../config.js';
import { loadGatewayConfig } from '../gateway/config.js';
import { Gateway } from '../gateway/gateway.js';
import { loggerOptions } from '../log.js';

export interface GatewayCommandOptions {
  config: string;
  http?: boolean;
  stdio?: boolean;
  host?: string;
  port?: number;
  logLevel?: string;
}

/**
 * `killswitch gateway`: stdio by default (what Claude Desktop and Cursor start), Streamable HTTP with
 * --http. Logs go to stderr: on stdio, stdout carries the MCP protocol and nothing else.
 */
export async function runGateway(opts: GatewayCommandOptions): Promise<void> {
  const log = pino(loggerOptions(opts.logLevel ?? 'info'), process.stderr);
  const config = loadGatewayConfig(opts.config, gatewayReferenceEnv());
  const gateway = await Gateway.start(config, log);
  let stopping = false;
  const stop = async (why: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ why }, 'gateway stopping');
    await gateway.close();
    process.exit(0);
  };
  process.once('SIGINT', () => void stop('SIGINT'));
  process.once('SIGTERM', () => void stop('SIGTERM'));

  if (opts.http) {
    const overrides: { host?: string; port?: number } = {};
    if (opts.host !== undefined) overrides.host = opts.host;
    if (opts.port !== undefined) overrides.port = opts.port;
    const front = await gateway.listenHttp(overrides);
    process.stderr.write(`killswitch gateway: Streamable HTTP at ${front.url}\n`);
  }
  if (opts.stdio || !opts.http) {
    const session = await gateway.serveStdio();
    // The desktop client closed our stdin: the conversation is over.
    session.server.onclose = () => void stop('stdin closed');
  }
}
