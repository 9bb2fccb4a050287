import type { Logger } from 'pino';
import { Counter, collectDefaultMetrics, Registry } from 'prom-client';
import { DECISION_CODES, ERROR_CODES, GATEWAY_CODES } from '../errors.js';
import { FastHistogram } from '../metrics/histogram.js';
import { listenMetricsOnly, METRICS_PATH } from '../metrics/listener.js';
import { readMetric } from '../metrics/read-metric.js';
import type { Outcome } from './calls.js';
import type { ControlPlaneObserver } from './control-plane.js';

// The Prometheus metrics of one gateway, in its own Registry (tests run many gateways in one process).
// On a call's path: one counter increment and at most three FastHistogram observations (the decision
// request, the upstream call, the result report); what the gateway keeps anyway (agents connected,
// upstream connections) is read when Prometheus scrapes. Every label value is bounded: server names come
// from the config's mcpServers, codes from the table in src/errors.ts (anything else is OTHER), the rest
// are fixed words. No token, key, session id, tool name or argument: tool names are chosen by the
// upstream (a server can list any number, and change them), and per-tool numbers are in the audit trail.

/** The methods that are decided one by one (agent-session.ts). */
export type DecidedMethod = 'tools/call' | 'resources/read' | 'prompts/get';

/** What a decided call came to, as the `outcome` label says it. */
export type CallOutcome = 'allowed' | 'denied' | 'no_decision' | 'withheld' | 'failed';

const KNOWN_CODES = new Set<string>([...Object.keys(DECISION_CODES), ...Object.keys(GATEWAY_CODES), ...Object.keys(ERROR_CODES)]);
/** A code not in the table (a newer control plane's, or whatever a proxy answered) keeps the label bounded. */
const OTHER_CODE = 'OTHER';

// A decision is ~1 ms on a healthy control plane; the wait ends at the gateway's timeoutMs (2 s by default, at most 60 s).
const CONTROL_PLANE_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];
// Upstream calls run up to maxExecutionSeconds (30 s by default, at most a day).
const UPSTREAM_BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300];

/** What the gateway's scrape-time gauges read (Gateway). */
export interface GatewayState {
  agentSessions(): number;
  upstreams(): Iterable<{ name: string; up: boolean }>;
}

export class GatewayMetrics {
  readonly registry = new Registry();
  private readonly calls: Counter<'method' | 'server' | 'outcome' | 'code'>;
  private readonly unknownNames: Counter<'method'>;
  private readonly controlPlaneSeconds: FastHistogram;
  private readonly upstreamSeconds: FastHistogram;
  private processMetrics = false;

  constructor() {
    this.calls = new Counter({
      name: 'killswitch_gateway_calls_total',
      help: 'Decided calls (tools/call, resources/read, prompts/get) by method, upstream server, outcome (allowed, denied, no_decision: the control plane gave no decision and the call was denied to fail closed, withheld, failed) and code.',
      labelNames: ['method', 'server', 'outcome', 'code'],
      registers: [this.registry],
    });
    this.unknownNames = new Counter({
      name: 'killswitch_gateway_unknown_names_total',
      help: 'Requests naming a tool, resource or prompt no upstream behind this gateway offers (UNKNOWN_TOOL, UNKNOWN_RESOURCE, UNKNOWN_PROMPT), by method: refused before any decision, so neither in killswitch_gateway_calls_total nor in the audit trail.',
      labelNames: ['method'],
      registers: [this.registry],
    });
    this.controlPlaneSeconds = new FastHistogram(
      'killswitch_gateway_control_plane_request_duration_seconds',
      'Requests to the control plane by request (decision, result, session, session_close, tool_report, approval) and result (ok, or why there was no usable answer: timeout, unreachable, unavailable, unauthenticated, rejected), with the time the gateway waited.',
      ['request', 'result'],
      CONTROL_PLANE_BUCKETS,
      this.registry,
    );
    this.upstreamSeconds = new FastHistogram(
      'killswitch_gateway_upstream_call_duration_seconds',
      'Allowed calls sent to an upstream MCP server, by server and result (ok, tool_error: an isError result, error: a JSON-RPC error, unavailable: its connection was down or closed, timeout, cancelled, oversize), with their duration.',
      ['server', 'result'],
      UPSTREAM_BUCKETS,
      this.registry,
    );
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  render(): Promise<string> {
    return this.registry.metrics();
  }

  /** Registers the gauges read at scrape time. Call once, when the gateway exists. */
  watch(state: GatewayState): void {
    readMetric(this.registry, 'killswitch_gateway_agent_sessions', 'Agents connected to this gateway (one per stdio client or Streamable HTTP session).', 'gauge', 'sum', () => [[{}, state.agentSessions()]]);
    readMetric(this.registry, 'killswitch_gateway_upstream_up', "1 while the upstream MCP server's connection is open, 0 while it is down and being reconnected (its calls fail UPSTREAM_UNAVAILABLE).", 'gauge', 'min', () =>
      [...state.upstreams()].map((u) => [{ server: u.name }, u.up ? 1 : 0]),
    );
  }

  /**
   * Node's process metrics (process_*, nodejs_*: memory, CPU, event loop lag). They describe the process,
   * not one gateway: the CLI, which runs one gateway per process, turns them on. Once.
   */
  collectProcessMetrics(): void {
    if (this.processMetrics) return;
    this.processMetrics = true;
    collectDefaultMetrics({ register: this.registry });
  }

  /** One decided call (decideAndRun's outcome): counted, and its upstream call timed if it was sent. */
  observeCall(method: DecidedMethod, server: string, outcome: Outcome<unknown>): void {
    this.calls.inc({ method, server, outcome: outcomeOf(outcome), code: boundedCode(codeOf(outcome)) });
    if (outcome.kind !== 'denied' && outcome.upstream) this.upstreamSeconds.observe([server, outcome.upstream.result], outcome.upstream.seconds);
  }

  /** A request for a name no upstream offers (UNKNOWN_TOOL ...): refused before any decision. */
  observeUnknown(method: DecidedMethod): void {
    this.unknownNames.inc({ method });
  }

  /** One request to the control plane: `ok`, or why there was no usable answer (ControlPlaneError.failure). */
  readonly observeControlPlane: ControlPlaneObserver = (request, result, seconds) => {
    this.controlPlaneSeconds.observe([request, result], seconds);
  };
}

function outcomeOf(outcome: Outcome<unknown>): CallOutcome {
  switch (outcome.kind) {
    case 'ok':
      return 'allowed';
    case 'denied':
      return outcome.decided ? 'denied' : 'no_decision';
    default:
      return outcome.kind;
  }
}

function codeOf(outcome: Outcome<unknown>): string {
  switch (outcome.kind) {
    case 'ok':
      return 'OK';
    case 'withheld':
      return outcome.trigger;
    default:
      return outcome.code;
  }
}

function boundedCode(code: string): string {
  return KNOWN_CODES.has(code) ? code : OTHER_CODE;
}

export interface GatewayMetricsListener {
  /** Where Prometheus scrapes it, e.g. http://127.0.0.1:9465/metrics. */
  url: string;
  close(): Promise<void>;
}

/**
 * GET /metrics without a key on `killswitch.metrics.host:port` (only that path). Like the control plane's
 * METRICS_PORT: bind it where Prometheus reaches and agents do not. The numbers hold no secret.
 */
export async function listenMetrics(metrics: GatewayMetrics, opts: { host: string; port: number }, log: Logger): Promise<GatewayMetricsListener> {
  const { address, close } = await listenMetricsOnly(metrics, opts.host, opts.port, log);
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  const url = `http://${host}:${address.port}${METRICS_PATH}`;
  log.info({ url }, 'gateway metrics: GET /metrics served without a key (killswitch.metrics)');
  return { url, close };
}
