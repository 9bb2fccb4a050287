// Writes deploy/kubernetes/monitoring/prometheusrule.yaml from deploy/prometheus/alerts.yml: the same
// groups in a Prometheus Operator PrometheusRule, so the two cannot drift (test/unit/kubernetes.test.ts
// fails when they differ). Run: npm run k8s:rules
import { readFileSync, writeFileSync } from 'node:fs';
import { parse, stringify } from 'yaml';

const RULES = 'deploy/prometheus/alerts.yml';
const OUT = 'deploy/kubernetes/monitoring/prometheusrule.yaml';

const { groups } = parse(readFileSync(RULES, 'utf8')) as { groups: unknown[] };
const rule = {
  apiVersion: 'monitoring.coreos.com/v1',
  kind: 'PrometheusRule',
  metadata: { name: 'killswitch', labels: { 'app.kubernetes.io/name': 'killswitch' } },
  spec: { groups },
};
const head = [
  `# ${RULES} as a Prometheus Operator PrometheusRule: spec.groups is that file's \`groups\`, unchanged`,
  '# (test/unit/kubernetes.test.ts compares them). Generated: edit alerts.yml, then run `npm run k8s:rules`.',
  '# Your Prometheus may select rules by a label (its ruleSelector, e.g. release: prometheus): add it below.',
  '',
].join('\n');
writeFileSync(OUT, head + stringify(rule, { lineWidth: 0 }));
console.log(`wrote ${OUT}`);
