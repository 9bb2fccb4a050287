import { pino } from 'pino';
import { gatewayReferenceEnv } from '../config.js';
import { loadGatewayConfig } from '../gateway/config.js';
import { Gateway } from '../gateway/gateway.js';
import { rootUpstreamWarning } from '../gateway/privileges.js';
import { logCrashes, loggerOptions } from '../log.js';
import { exitCodeOf, stopSignalHandler } from '../signals.js';

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
  logCrashes(log);
  const config = loadGatewayConfig(opts.config, gatewayReferenceEnv());
  // Before any upstream starts: each would inherit root.
  const asRoot = rootUpstreamWarning(process.getuid?.(), config.upstreams);
  if (asRoot !== undefined) log.warn({ uid: 0, upstreams: config.upstreams.filter((u) => u.transport === 'stdio').map((u) => u.name) }, asRoot);
  // The signal handlers go in before any upstream starts: a SIGTERM or Ctrl-C while one is still starting
  // (`npx -y` downloading, a container pulling) found none, ended this process by the signal's default
  // action, and left that upstream running as an orphan (one that reads no stdin yet never sees the pipe
  // close). Now a stop gives the start up (its upstreams are closed: their processes stopped) and exits 0.
  const stopped = new AbortController();
  const starting = Gateway.start(config, log, { signal: stopped.signal });
  let stopping = false;
  const stop = async (why: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ why }, 'gateway stopping');
    // An upstream that ignores SIGTERM must not keep an orphaned gateway alive: the SDK escalates to
    // SIGKILL within about 4 s; past this deadline we give up waiting and exit anyway.
    setTimeout(() => {
      log.error({ why }, 'gateway did not stop within 15 s; exiting anyway');
      process.exit(1);
    }, 15_000).unref();
    stopped.abort();
    // A start given up has closed what it started (and rejects): nothing more to close.
    await starting.then(
      (gateway) => gateway.close(),
      () => {},
    );
    process.exit(0);
  };
  // Under `npx killswitch gateway` a Ctrl-C arrives twice (the terminal's SIGINT, then npm's copy): with
  // `process.once` the copy found no handler and ended the gateway by the default action, before it had
  // closed its control-plane session. The same signal again within SIGNAL_REPEAT_MS is that copy; another
  // after a stop begun by a signal exits at once (130, 143), as `killswitch start` does. A signal after a
  // stop begun otherwise (stdin ended: a desktop client quitting, which may signal next) lets it finish.
  const onSignal = stopSignalHandler(
    log,
    (signal) => void stop(signal),
    (signal) => {
      log.error({ signal }, 'second signal: exiting now without finishing the stop (upstreams may be left running, the control-plane session open)');
      process.exit(exitCodeOf(signal));
    },
  );
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  let gateway: Gateway;
  try {
    gateway = await starting;
  } catch (err) {
    if (stopping) return; // stop() exits once the start has closed its upstreams
    throw err;
  }
  if (stopping) return;

  const metrics = await gateway.listenMetrics();
  if (metrics) process.stderr.write(`killswitch gateway: metrics at ${metrics.url}\n`);
  // This process runs one gateway: its memory, CPU and event loop lag are the gateway's. Only where a
  // scrape can read them (the event loop monitor samples every 10 ms): not for a stdio gateway without
  // killswitch.metrics.
  if (metrics || opts.http) gateway.metrics.collectProcessMetrics();
  if (opts.http) {
    const overrides: { host?: string; port?: number } = {};
    if (opts.host !== undefined) overrides.host = opts.host;
    if (opts.port !== undefined) overrides.port = opts.port;
    const front = await gateway.listenHttp(overrides);
    process.stderr.write(`killswitch gateway: Streamable HTTP at ${front.url}\n`);
  }
  if (opts.stdio || !opts.http) {
    const session = await gateway.serveStdio();
    const closeSession = session.server.onclose;
    session.server.onclose = () => {
      closeSession?.();
      void stop('stdio transport closed');
    };
    // The SDK's stdio transport never listens for the end of stdin: a client that exits (or is killed)
    // would leave this gateway and its upstreams running as orphans. End of stdin ends the conversation.
    process.stdin.once('end', () => void stop('stdin ended'));
    process.stdin.once('close', () => void stop('stdin closed'));
  }
}
