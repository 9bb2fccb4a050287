import type { Registry } from 'prom-client';

// A counter or gauge whose value is read from somewhere else when Prometheus scrapes: numbers another
// module keeps already cost nothing on the request path. Shared by the control plane (metrics.ts) and
// the gateway (src/gateway/metrics.ts).

export type Labels = Record<string, string>;
export type Sample = [Labels, number];

/**
 * How the value is combined over the worker processes of WORKERS > 1 (src/cluster.ts): what each process
 * counts adds up; a state that is bad when any process has it (not ready, stale, failing) takes the worst;
 * a count of the whole installation (halted sessions, read from Postgres) is the same everywhere: max; a
 * measurement of the host each process makes on its own (the clock's offset, which may be negative): average.
 */
export type Aggregator = 'sum' | 'min' | 'max' | 'average';

export function readMetric(registry: Registry, name: string, help: string, type: 'counter' | 'gauge', aggregator: Aggregator, read: () => Sample[] | Promise<Sample[]>): void {
  registry.registerMetric({
    name,
    help,
    type,
    aggregator,
    async get() {
      const samples = await read();
      return { name, help, type, aggregator, values: samples.map(([labels, value]) => ({ labels, value })) };
    },
  } as never);
}
