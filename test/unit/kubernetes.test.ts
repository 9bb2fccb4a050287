import { readdirSync, readFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseAllDocuments, parse as parseYaml } from 'yaml';
import { ConfigError, checkStartConfig, configWarnings, loadConfig, SETTINGS, type SettingSpec } from '../../src/config.js';
import { CHECK_TIMEOUT_MS } from '../../src/http/health.js';
import { formatIssue, parsePolicy } from '../../src/policy/index.js';
import { CLOSE_GRACE_MS } from '../../src/server.js';

// No cluster runs where the tests run (no Docker, no kubectl, no network), so the sample manifests in
// deploy/kubernetes are never applied here. These checks hold them to the code they configure: setting
// names and values, the routes and port the probes use, the shutdown times, the node command line, the
// policy file, the Prometheus rules, and to each other (selectors, port names, Secret keys).

const DIR = 'deploy/kubernetes';

// biome-ignore lint/suspicious/noExplicitAny: Kubernetes objects are checked field by field below.
type K8sObject = { apiVersion: string; kind: string; metadata: { name: string; labels?: Record<string, string> }; spec?: any; stringData?: Record<string, string> };

/** Every document of a YAML file, failing on the first parse error (with its file). */
function documents(file: string): K8sObject[] {
  const docs = parseAllDocuments(readFileSync(file, 'utf8'));
  return docs.map((doc) => {
    expect(doc.errors.map((e) => `${file}: ${e.message}`)).toEqual([]);
    return doc.toJS() as K8sObject;
  });
}

interface Kustomization {
  namespace?: string;
  resources: string[];
  images?: { name: string; newName?: string; newTag?: string }[];
  configMapGenerator?: { name: string; files: string[]; options?: { disableNameSuffixHash?: boolean; labels?: Record<string, string> } }[];
}
const kustomization = parseYaml(readFileSync(join(DIR, 'kustomization.yaml'), 'utf8')) as Kustomization;
const monitoringKustomization = parseYaml(readFileSync(join(DIR, 'monitoring/kustomization.yaml'), 'utf8')) as Kustomization;
const objects = kustomization.resources.flatMap((r) => documents(join(DIR, r)));
const monitoring = monitoringKustomization.resources.flatMap((r) => documents(join(DIR, 'monitoring', r)));

const only = (list: K8sObject[], kind: string, name?: string): K8sObject => {
  const found = list.filter((o) => o.kind === kind && (name === undefined || o.metadata.name === name));
  expect(found.length, `${kind} ${name ?? ''}`).toBe(1);
  return found[0]!;
};
const workload = only(objects, 'StatefulSet');
const pod = workload.spec.template.spec;
const container = (pod.containers as { name: string }[]).find((c) => c.name === 'control-plane') as {
  name: string;
  command: string[];
  workingDir?: string;
  ports: { name: string; containerPort: number }[];
  env: { name: string; value?: string; valueFrom?: { secretKeyRef?: { name: string; key: string; optional?: boolean } } }[];
  volumeMounts: { name: string; mountPath: string; subPath?: string }[];
  startupProbe: Probe;
  livenessProbe: Probe;
  readinessProbe: Probe;
  lifecycle: { preStop: { exec?: { command: string[] }; sleep?: { seconds: number } } };
  securityContext: Record<string, unknown>;
};
interface Probe {
  httpGet?: { path: string; port: string | number; scheme?: string };
  timeoutSeconds?: number;
}
const envValue = (name: string) => container.env.find((e) => e.name === name)?.value;
const setting = (name: string): SettingSpec | undefined => (SETTINGS as readonly SettingSpec[]).find((s) => s.env === name);
/** A setting as the pod gets it: the manifest's literal value, else config.ts's default. */
const effective = (name: string) => envValue(name) ?? setting(name)?.default;

const secretTemplate = only(documents(join(DIR, 'secret.example.yaml')), 'Secret');
/** Stand-ins for the Secret's values that config.ts accepts (only this test sees them). */
const VALID_SECRETS: Record<string, string> = {
  DATABASE_URL: 'postgres://killswitch:pw@postgres.db:5432/killswitch',
  REDIS_URL: 'redis://:pw@redis.db:6379/0',
  TOKEN_HASH_SECRET: 'x'.repeat(48),
  UNLEASH_API_TOKEN: '*:production.0123456789abcdef',
  UNLEASH_ADMIN_TOKEN: '*:*.0123456789abcdef',
};
/** The environment the container starts with, the Secret filled with VALID_SECRETS. */
function podEnvironment(): Record<string, string> {
  const env: Record<string, string> = {};
  for (const e of container.env) {
    const ref = e.valueFrom?.secretKeyRef;
    const value = ref ? VALID_SECRETS[ref.key] : e.value;
    if (value !== undefined) env[e.name] = value;
  }
  return env;
}

describe('deploy/kubernetes: the files', () => {
  it('parse, every document with a kind, and kustomization.yaml lists every manifest but the Secret template', () => {
    const yamlFiles = readdirSync(DIR).filter((f) => /\.ya?ml$/.test(f));
    for (const file of [...yamlFiles.map((f) => join(DIR, f)), ...monitoringKustomization.resources.map((r) => join(DIR, 'monitoring', r))]) {
      for (const doc of documents(file)) expect(doc, file).toBeTruthy();
    }
    const generated = new Set((kustomization.configMapGenerator ?? []).flatMap((g) => g.files));
    const manifests = yamlFiles.filter((f) => f !== 'kustomization.yaml' && f !== 'secret.example.yaml' && !generated.has(f));
    expect([...kustomization.resources].sort()).toEqual(manifests.sort());
    for (const o of [...objects, ...monitoring]) expect(o.kind && o.apiVersion && o.metadata?.name, JSON.stringify(o).slice(0, 80)).toBeTruthy();
    // monitoring/ holds nothing its kustomization does not use (a file left behind would look applied).
    const monitoringFiles = ['kustomization.yaml', ...monitoringKustomization.resources, ...(monitoringKustomization.configMapGenerator ?? []).flatMap((g) => g.files)];
    expect(readdirSync(join(DIR, 'monitoring')).sort()).toEqual(monitoringFiles.sort());
  });
});

describe('deploy/kubernetes: the control plane', () => {
  it('sets only settings src/config.ts reads, and a configuration it accepts without a warning', () => {
    const known = new Set<string>(SETTINGS.map((s) => s.env));
    expect(container.env.map((e) => e.name).filter((name) => !known.has(name))).toEqual([]);
    const config = loadConfig(podEnvironment());
    checkStartConfig(config);
    expect(configWarnings(config)).toEqual([]);
  });

  it('reads flags from a real Unleash: UNLEASH_URL is set (empty would start an embedded Unleash in every pod)', () => {
    expect(loadConfig(podEnvironment()).unleashUrl).toMatch(/^https?:\/\/.+\/api$/);
  });

  it('runs one process per pod, with the DATA_DIR of the image', () => {
    expect(Number(effective('WORKERS'))).toBe(1);
    expect(readFileSync('Dockerfile', 'utf8')).toContain(`ENV DATA_DIR=${envValue('DATA_DIR')}\n`);
  });

  it('runs the documented node command line, the Dockerfile CMD, in the image directory', () => {
    const operations = readFileSync('docs/operations.md', 'utf8');
    const documented = /as the Dockerfile does: `(node [^`]+)`/.exec(operations)?.[1];
    expect(documented).toBeDefined();
    expect(container.command.join(' ')).toBe(documented);
    const dockerfile = readFileSync('Dockerfile', 'utf8');
    const cmd = dockerfile.split('\n').filter((l) => l.startsWith('CMD ')).at(-1)!;
    expect(container.command).toEqual(JSON.parse(cmd.slice(cmd.indexOf('['))));
    const workdir = dockerfile.split('\n').filter((l) => l.startsWith('WORKDIR ')).at(-1)!;
    expect(container.workingDir).toBe(workdir.slice('WORKDIR '.length).trim());
  });

  it('runs as the non-root user of the image, without privileges', () => {
    expect(pod.securityContext.runAsNonRoot).toBe(true);
    expect(pod.securityContext.runAsUser).toBeGreaterThan(0);
    expect(pod.securityContext.fsGroup).toBe(pod.securityContext.runAsUser);
    expect(container.securityContext['allowPrivilegeEscalation']).toBe(false);
    expect(container.securityContext['capabilities']).toEqual({ drop: ['ALL'] });
  });

  it('probes /healthz for liveness and start, /readyz for readiness, on the port the server listens on', () => {
    const api = readFileSync('docs/api.md', 'utf8'); // generated from the app's routes (api-doc.test.ts)
    const http = container.ports.find((p) => p.name === 'http');
    expect(http?.containerPort).toBe(Number(effective('PORT')));
    expect(Number(effective('PORT'))).toBe(Number(setting('PORT')?.default));
    const probes = { startupProbe: '/healthz', livenessProbe: '/healthz', readinessProbe: '/readyz' } as const;
    for (const [probe, path] of Object.entries(probes)) {
      const get = container[probe as keyof typeof probes].httpGet;
      expect(get?.path, probe).toBe(path);
      expect(api, probe).toContain(`### \`GET ${path}\``);
      expect(get?.port === http?.name || get?.port === http?.containerPort, probe).toBe(true);
      // Plain HTTP probes go with a plain listener; TLS_CERT_FILE makes PORT speak HTTPS only.
      expect(get?.scheme ?? 'HTTP', probe).toBe(effective('TLS_CERT_FILE') ? 'HTTPS' : 'HTTP');
    }
    // /readyz gives each check CHECK_TIMEOUT_MS, then answers with the reason: the probe must wait for that answer.
    expect(container.readinessProbe.timeoutSeconds).toBeGreaterThan(CHECK_TIMEOUT_MS / 1000);
  });

  it('drains before the kubelet kills it: terminationGracePeriodSeconds above SHUTDOWN_TIMEOUT_MS + the closing grace + the preStop sleep', () => {
    const shutdownS = Number(effective('SHUTDOWN_TIMEOUT_MS')) / 1000;
    const preStop = container.lifecycle.preStop;
    const exec = preStop.exec?.command;
    const sleepS = preStop.sleep?.seconds ?? (exec?.[0] === 'sleep' ? Number(exec[1]) : Number.NaN);
    expect(sleepS, 'preStop sleep seconds').toBeGreaterThan(0);
    expect(pod.terminationGracePeriodSeconds).toBeGreaterThan(shutdownS + CLOSE_GRACE_MS / 1000 + sleepS);
  });

  it('keeps DATA_DIR on a volume of its own per pod that outlives the pod (the audit spool)', () => {
    const mount = container.volumeMounts.find((m) => m.mountPath === envValue('DATA_DIR'));
    expect(mount, 'a volume mounted at DATA_DIR').toBeDefined();
    const claims = (workload.spec.volumeClaimTemplates as { metadata: { name: string } }[]).map((c) => c.metadata.name);
    expect(claims).toContain(mount!.name);
    expect((pod.volumes as { name: string }[]).map((v) => v.name)).not.toContain(mount!.name);
    expect(workload.spec.persistentVolumeClaimRetentionPolicy).toEqual({ whenDeleted: 'Retain', whenScaled: 'Retain' });
  });

  it('runs at least two replicas, and a node drain takes one at a time', () => {
    expect(workload.spec.replicas).toBeGreaterThanOrEqual(2);
    expect(only(objects, 'PodDisruptionBudget').spec.maxUnavailable).toBe(1);
  });
});

describe('deploy/kubernetes: the policy file', () => {
  const generator = kustomization.configMapGenerator?.find((g) => g.name === 'killswitch-policy');
  const policyFile = envValue('POLICY_FILE')!;
  const source = join(DIR, basename(policyFile));

  it("is mounted from the config map as a directory (a subPath mount never sees the config map's updates)", () => {
    expect(generator?.files).toContain(basename(policyFile));
    expect(generator?.options?.disableNameSuffixHash).toBe(true);
    const volume = (pod.volumes as { name: string; configMap?: { name: string } }[]).find((v) => v.configMap?.name === generator?.name);
    const mount = container.volumeMounts.find((m) => m.name === volume?.name);
    expect(mount?.mountPath).toBe(dirname(policyFile));
    expect(mount?.subPath).toBeUndefined();
  });

  it('validates with the policy parser and is policy/default.yaml', () => {
    const text = readFileSync(source, 'utf8');
    const result = parsePolicy(text, source);
    expect(result.issues.filter((i) => i.severity === 'error').map(formatIssue)).toEqual([]);
    expect(result.ok).toBe(true);
    expect(text).toBe(readFileSync('policy/default.yaml', 'utf8'));
  });
});

describe('deploy/kubernetes: the Secret', () => {
  it('the template has every key the pod reads, under the name the pod reads', () => {
    const refs = container.env.flatMap((e) => (e.valueFrom?.secretKeyRef ? [e.valueFrom.secretKeyRef] : []));
    expect(refs.length).toBeGreaterThan(0);
    for (const ref of refs) {
      expect(ref.name).toBe(secretTemplate.metadata.name);
      expect(Object.keys(secretTemplate.stringData!), ref.key).toContain(ref.key);
    }
  });

  it('holds secrets only: every key is a setting config.ts marks secret or an Unleash token', () => {
    for (const key of Object.keys(secretTemplate.stringData!)) {
      const spec = setting(key);
      expect(spec, key).toBeDefined();
      expect(spec?.secret === true || /^UNLEASH_.*TOKEN$/.test(key), key).toBe(true);
    }
  });

  it('its placeholders, left in, stop the start naming the setting (the Unleash tokens are refused by Unleash)', () => {
    for (const [key, placeholder] of Object.entries(secretTemplate.stringData!)) {
      if (/^UNLEASH_.*TOKEN$/.test(key)) continue;
      let error: unknown;
      try {
        loadConfig({ ...podEnvironment(), [key]: placeholder });
      } catch (err) {
        error = err;
      }
      expect(error, key).toBeInstanceOf(ConfigError);
      expect((error as ConfigError).variable).toBe(key);
    }
  });
});

describe('deploy/kubernetes: Services, selectors and monitoring', () => {
  const podLabels = workload.spec.template.metadata.labels as Record<string, string>;
  const selects = (selector: Record<string, string>, labels: Record<string, string>) => Object.entries(selector).every(([k, v]) => labels[k] === v);

  it('every Service and the PodDisruptionBudget select the pods, by port names the container has', () => {
    expect(selects(workload.spec.selector.matchLabels, podLabels)).toBe(true);
    expect(selects(only(objects, 'PodDisruptionBudget').spec.selector.matchLabels, podLabels)).toBe(true);
    const names = new Set(container.ports.map((p) => p.name));
    for (const service of objects.filter((o) => o.kind === 'Service')) {
      expect(selects(service.spec.selector, podLabels), service.metadata.name).toBe(true);
      for (const port of service.spec.ports as { targetPort: string }[]) expect(names, service.metadata.name).toContain(port.targetPort);
    }
    const governing = only(objects, 'Service', workload.spec.serviceName);
    expect(governing.spec.clusterIP).toBe('None');
  });

  it('scrapes the metrics port METRICS_PORT opens, as job "killswitch", with the rules of deploy/prometheus/alerts.yml', () => {
    const metrics = container.ports.find((p) => p.name === 'metrics');
    expect(metrics?.containerPort).toBe(Number(envValue('METRICS_PORT')));
    const monitor = only(monitoring, 'ServiceMonitor');
    const [service, ...more] = objects.filter((o) => o.kind === 'Service' && selects(monitor.spec.selector.matchLabels, o.metadata.labels ?? {}) && o.spec.ports.some((p: { name: string }) => p.name === 'metrics'));
    expect(more).toEqual([]);
    expect(service?.metadata.labels?.[monitor.spec.jobLabel]).toBe('killswitch');
    expect(monitor.spec.endpoints.map((e: { port: string }) => e.port)).toEqual(['metrics']);
    const alerts = parseYaml(readFileSync('deploy/prometheus/alerts.yml', 'utf8')) as { groups: unknown };
    expect(only(monitoring, 'PrometheusRule').spec.groups, 'run `npm run k8s:rules`').toEqual(alerts.groups);
  });

  it('gives Grafana\'s dashboard sidecar deploy/grafana/killswitch.json, in a config map labelled grafana_dashboard: "1"', () => {
    const generator = monitoringKustomization.configMapGenerator?.find((g) => g.name === 'killswitch-grafana-dashboard');
    expect(generator?.files).toEqual(['killswitch.json']);
    expect(generator?.options?.labels).toEqual({ grafana_dashboard: '1' });
    // A hashed name would leave the old config map, with the same dashboard uid, beside the new one.
    expect(generator?.options?.disableNameSuffixHash).toBe(true);
    const copy = readFileSync(join(DIR, 'monitoring', 'killswitch.json'), 'utf8');
    expect(copy === readFileSync('deploy/grafana/killswitch.json', 'utf8'), 'cp deploy/grafana/killswitch.json deploy/kubernetes/monitoring/').toBe(true);
  });
});

describe('deploy/kubernetes: the NetworkPolicy', () => {
  const policy = only(objects, 'NetworkPolicy');
  const podLabels = workload.spec.template.metadata.labels as Record<string, string>;
  const selects = (selector: Record<string, string>, labels: Record<string, string>) => Object.entries(selector).every(([k, v]) => labels[k] === v);
  type Peer = { namespaceSelector?: { matchLabels?: Record<string, string> }; podSelector?: { matchLabels?: Record<string, string> }; ipBlock?: { cidr: string } };
  type Rule = { from?: Peer[]; to?: Peer[]; ports?: { protocol?: string; port: number | string }[] };
  const ingress = policy.spec.ingress as Rule[];
  const egress = policy.spec.egress as Rule[];
  /** "TCP/8080": what a rule's port admits (TCP unless it says otherwise). */
  const portsOf = (rule: Rule) => (rule.ports ?? []).map((p) => `${p.protocol ?? 'TCP'}/${p.port}`);
  const tcp = (port: number | string) => `TCP/${port}`;
  const sorted = (list: string[]) => [...new Set(list)].sort();
  const namespaceOf = (peer: Peer) => peer.namespaceSelector?.matchLabels?.['kubernetes.io/metadata.name'];
  /** The namespace of an in-cluster Service URL (http://name.namespace.svc...), else undefined. */
  const serviceNamespace = (url: URL) => /^[a-z0-9-]+\.([a-z0-9-]+)\.svc(\.|$)/.exec(url.hostname)?.[1];
  const urlPort = (url: URL) => Number(url.port || (url.protocol === 'https:' ? 443 : 80));
  /** The port of the example URL in the comment above a key of secret.example.yaml (`# postgres://USER:PASSWORD@HOST:5432/...`). */
  function templatePort(key: string): number {
    const lines = readFileSync(join(DIR, 'secret.example.yaml'), 'utf8').split('\n');
    const at = lines.findIndex((l) => l.trimStart().startsWith(`${key}:`));
    let i = at - 1;
    while (i >= 0 && lines[i]!.trimStart().startsWith('#')) i--;
    const comment = lines.slice(i + 1, at).join('\n');
    const port = /\b[a-z]+:\/\/\S*:(\d+)\//.exec(comment)?.[1];
    expect(port, `the example URL above ${key} in secret.example.yaml`).toBeDefined();
    return Number(port);
  }

  it('covers the pods of the StatefulSet and of every Service, in both directions, and no rule admits everyone or every port', () => {
    expect(selects(policy.spec.podSelector.matchLabels, podLabels)).toBe(true);
    // Every pod a Service selects carries the Service's labels, so the policy selects it when its own labels are among them.
    for (const service of objects.filter((o) => o.kind === 'Service')) expect(selects(policy.spec.podSelector.matchLabels, service.spec.selector), service.metadata.name).toBe(true);
    expect(sorted(policy.spec.policyTypes)).toEqual(['Egress', 'Ingress']);
    for (const [i, rule] of ingress.entries()) {
      expect(rule.from?.length, `ingress[${i}].from`).toBeGreaterThan(0);
      expect(rule.ports?.length, `ingress[${i}].ports`).toBeGreaterThan(0);
      for (const peer of rule.from!) expect(peer.namespaceSelector ?? peer.ipBlock, `ingress[${i}]: a peer of another namespace or range, not all of killswitch's pods`).toBeDefined();
    }
    for (const [i, rule] of egress.entries()) {
      expect(rule.to?.length, `egress[${i}].to`).toBeGreaterThan(0);
      expect(rule.ports?.length, `egress[${i}].ports`).toBeGreaterThan(0);
    }
  });

  it('admits PORT to the API peers and METRICS_PORT (keyless) to Prometheus alone: the container ports, each Service port included', () => {
    const http = container.ports.find((p) => p.name === 'http')!;
    const metrics = container.ports.find((p) => p.name === 'metrics')!;
    expect(http.containerPort).toBe(Number(effective('PORT')));
    expect(metrics.containerPort).toBe(Number(envValue('METRICS_PORT')));
    const api = ingress.filter((r) => portsOf(r).includes(tcp(effective('PORT')!)));
    const scrape = ingress.filter((r) => portsOf(r).includes(tcp(envValue('METRICS_PORT')!)));
    expect(api.length, 'one ingress rule for PORT').toBe(1);
    expect(scrape.length, 'one ingress rule for METRICS_PORT').toBe(1);
    expect(portsOf(api[0]!)).toEqual([tcp(http.containerPort)]);
    // The metrics port serves GET /metrics without a key: its rule admits one peer, and to nothing else.
    expect(portsOf(scrape[0]!)).toEqual([tcp(metrics.containerPort)]);
    expect(scrape[0]!.from).toHaveLength(1);
    // Nothing admitted that the container does not listen on, nothing it listens on left out.
    expect(sorted(ingress.flatMap(portsOf))).toEqual(sorted(container.ports.map((p) => tcp(p.containerPort))));
    for (const service of objects.filter((o) => o.kind === 'Service')) {
      for (const port of service.spec.ports as { name: string; targetPort: string }[]) {
        const target = container.ports.find((p) => p.name === port.targetPort);
        expect(ingress.flatMap(portsOf), `${service.metadata.name}/${port.name}`).toContain(tcp(target!.containerPort));
      }
    }
  });

  it("admits Unleash's webhook: PUBLIC_URL's Service port leads to a port the policy opens to UNLEASH_URL's namespace", () => {
    const publicUrl = new URL(envValue('PUBLIC_URL')!);
    expect(serviceNamespace(publicUrl), "PUBLIC_URL names a Service of kustomization.yaml's namespace").toBe(kustomization.namespace);
    const service = only(objects, 'Service', publicUrl.hostname.split('.')[0]);
    const port = (service.spec.ports as { port: number; targetPort: string }[]).find((p) => p.port === urlPort(publicUrl));
    expect(port, `${service.metadata.name} has PUBLIC_URL's port ${urlPort(publicUrl)}`).toBeDefined();
    const target = container.ports.find((p) => p.name === port!.targetPort)!;
    const unleash = serviceNamespace(new URL(envValue('UNLEASH_URL')!));
    expect(unleash, 'UNLEASH_URL names a Service in the cluster').toBeDefined();
    const rule = ingress.find((r) => portsOf(r).includes(tcp(target.containerPort)));
    expect(rule?.from?.map(namespaceOf)).toContain(unleash);
  });

  it("lets out DNS, Postgres, Redis and Unleash only, on the ports of the Secret template's URLs and of UNLEASH_URL", () => {
    const databasePort = templatePort('DATABASE_URL');
    const redisPort = templatePort('REDIS_URL');
    // The template's examples are the ports config.ts assumes (its defaults).
    expect(databasePort).toBe(urlPort(new URL(setting('DATABASE_URL')!.default!)));
    expect(redisPort).toBe(urlPort(new URL(setting('REDIS_URL')!.default!)));
    const unleashUrl = new URL(envValue('UNLEASH_URL')!);
    const expected = ['UDP/53', 'TCP/53', tcp(databasePort), tcp(redisPort), tcp(urlPort(unleashUrl))];
    // Settings that send more out, off in the sample: set one and the policy needs a rule for its port.
    const env = podEnvironment();
    const named = new Set(container.env.map((e) => e.name));
    if (named.has('ALERT_WEBHOOK_URL')) expected.push(tcp(env.ALERT_WEBHOOK_URL ? urlPort(new URL(env.ALERT_WEBHOOK_URL)) : 443));
    const config = loadConfig(env);
    if (config.otelTracesExporter === 'otlp' && !config.otelSdkDisabled) {
      const endpoint = config.otelExporterOtlpTracesEndpoint || config.otelExporterOtlpEndpoint || 'http://localhost:4318';
      expected.push(tcp(urlPort(new URL(endpoint))));
    }
    expect(sorted(egress.flatMap(portsOf))).toEqual(sorted(expected));
    // Unleash's rule reaches UNLEASH_URL's namespace.
    const unleash = egress.filter((r) => portsOf(r).includes(tcp(urlPort(unleashUrl))));
    expect(unleash.flatMap((r) => r.to!.map(namespaceOf))).toContain(serviceNamespace(unleashUrl));
  });
});
