import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { GatewayMetrics } from '../../src/gateway/metrics.js';
import { allPanels, DASHBOARD, dashboardDrift, dashboardQueries, loadDashboard } from '../helpers/grafana-dashboard.js';

// deploy/grafana/killswitch.json, the sample Grafana dashboard: a model Grafana imports, with no data
// source of anyone's installation in it, and gateway panels that query only what the gateway serves.
// Its control-plane expressions are checked against a real control plane's GET /metrics in
// test/integration/metrics.test.ts. No Grafana runs here: nothing checks that Grafana renders it.

const dashboard = loadDashboard();
const panels = allPanels(dashboard);
// biome-ignore lint/suspicious/noTemplateCurlyInString: Grafana's variable syntax, not a JavaScript template.
const DATASOURCE = { type: 'prometheus', uid: '${datasource}' };

describe('deploy/grafana/killswitch.json', () => {
  it('parses as a dashboard model of a current Grafana, with panels whose ids are unique', () => {
    expect(() => JSON.parse(readFileSync(DASHBOARD, 'utf8'))).not.toThrow();
    // 41: Grafana 12's classic model; later Grafanas migrate it on load.
    expect(dashboard.schemaVersion).toBeGreaterThanOrEqual(41);
    expect(dashboard.uid).toMatch(/^[a-zA-Z0-9_-]{1,40}$/);
    expect(panels.length).toBeGreaterThan(30);
    const ids = panels.map((p) => p.id);
    expect(ids.every((id) => Number.isInteger(id) && id > 0)).toBe(true);
    expect(ids.filter((id, i) => ids.indexOf(id) !== i)).toEqual([]);
  });

  it('lays the panels out on the 24-column grid without overlaps', () => {
    const cells = new Map<string, string>();
    const overlaps: string[] = [];
    for (const p of panels) {
      const { x, y, w, h } = p.gridPos;
      expect(x >= 0 && w > 0 && h > 0 && x + w <= 24, p.title).toBe(true);
      for (let cx = x; cx < x + w; cx++) {
        for (let cy = y; cy < y + h; cy++) {
          const other = cells.get(`${cx},${cy}`);
          if (other) overlaps.push(`${p.title} / ${other}`);
          cells.set(`${cx},${cy}`, p.title);
        }
      }
    }
    expect([...new Set(overlaps)]).toEqual([]);
  });

  it('asks the Prometheus data source chosen in its `datasource` variable, and filters by an `instance` variable', () => {
    const [datasource, ...variables] = dashboard.templating.list;
    expect(datasource).toMatchObject({ type: 'datasource', name: 'datasource', query: 'prometheus' });
    const byName = new Map(variables.map((v) => [v.name, v]));
    for (const name of ['instance', 'gateway']) {
      expect(byName.get(name)?.type, name).toBe('query');
      expect(byName.get(name)?.datasource, name).toEqual(DATASOURCE);
    }
    // Rows hold no query; every other panel and each of its queries names the variable.
    const wrong: string[] = [];
    for (const p of panels) {
      if (p.type === 'row') {
        if (p.targets?.length) wrong.push(`row ${p.title} has queries`);
        continue;
      }
      if (JSON.stringify(p.datasource) !== JSON.stringify(DATASOURCE)) wrong.push(`${p.title}: ${JSON.stringify(p.datasource)}`);
      if (!p.targets?.length) wrong.push(`${p.title}: no query`);
      for (const t of p.targets ?? []) if (JSON.stringify(t.datasource) !== JSON.stringify(DATASOURCE)) wrong.push(`${p.title} ${t.refId}: ${JSON.stringify(t.datasource)}`);
    }
    expect(wrong).toEqual([]);
    // No data source uid of someone's Grafana anywhere: every uid in a datasource is the variable.
    const uids = [...readFileSync(DASHBOARD, 'utf8').matchAll(/"datasource":\s*\{[^}]*"uid":\s*"([^"]*)"/g)].map((m) => m[1]);
    expect(uids.length).toBeGreaterThan(panels.length);
    expect(new Set(uids)).toEqual(new Set([DATASOURCE.uid]));
  });

  it("queries only the gateway metrics and labels src/gateway/metrics.ts serves, each filtered by the gateway's instance", async () => {
    // What a gateway serves at GET /metrics is this registry's exposition (test/e2e/gateway-metrics.test.ts
    // scrapes a real one and holds docs/gateway.md to it); every series made once so its labels can be read.
    const metrics = new GatewayMetrics();
    metrics.watch({ agentSessions: () => 1, upstreams: () => [{ name: 'filesystem', up: true }] });
    metrics.collectProcessMetrics();
    metrics.observeCall('tools/call', 'filesystem', { kind: 'ok', result: {}, warning: undefined, decisionId: 'd-1', upstream: { result: 'ok', seconds: 0.01 } });
    metrics.observeControlPlane('decision', 'ok', 0.002);
    metrics.observeUnknown('tools/call');
    const queries = dashboardQueries(dashboard);
    const gatewayQueries = queries.filter((q) => q.expr.includes('killswitch_gateway_') || q.expr.includes('$gateway'));
    expect(gatewayQueries.length).toBeGreaterThan(8);
    expect(dashboardDrift(queries, 'gateway', await metrics.render())).toEqual([]);
  });
});
