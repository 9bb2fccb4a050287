import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { SETTINGS } from '../../src/config.js';
import { CLOSE_GRACE_MS } from '../../src/server.js';

// No Docker engine runs in the test environment, so the image and the compose file are never started
// here: these checks hold them to the code they configure (variable names, shutdown times, the node
// command line) and to each other (the health check).

interface Service {
  restart?: string;
  environment?: Record<string, string>;
  healthcheck?: { test: string[] };
  stop_grace_period?: string;
}

const compose = parse(readFileSync('docker-compose.yml', 'utf8')) as { services: Record<string, Service> };
const controlPlane = compose.services['control-plane']!;
const dockerfile = readFileSync('Dockerfile', 'utf8');
/** The final stage's instructions (the last FROM onwards), one per line. */
const finalStage = dockerfile.slice(dockerfile.lastIndexOf('\nFROM ')).split('\n');
const instruction = (name: string) => finalStage.filter((l) => l.startsWith(`${name} `));
/** The exec form (JSON array) at the end of a Dockerfile line. */
const execForm = (line: string) => JSON.parse(line.slice(line.indexOf('['))) as string[];
const startScript = (JSON.parse(readFileSync('package.json', 'utf8')) as { scripts: Record<string, string> }).scripts['start']!;

describe('docker-compose.yml', () => {
  it('names only variables src/config.ts reads, each read from .env under its own name', () => {
    const known = new Set<string>(SETTINGS.map((s) => s.env));
    const env = controlPlane.environment!;
    expect(Object.keys(env).filter((name) => !known.has(name))).toEqual([]);
    const renamed = Object.entries(env).filter(([name, value]) => value.startsWith('${') && !value.startsWith(`\${${name}:-`));
    expect(renamed).toEqual([]);
  });

  it('passes through the settings a compose user sets in .env', () => {
    const env = controlPlane.environment!;
    for (const name of ['LOG_LEVEL', 'UNLEASH_ENVIRONMENT', 'BOOTSTRAP_OWNER_KEY', 'POLICY_FILE', 'TOKEN_HASH_SECRET']) {
      expect(env[name], name).toMatch(new RegExp(`^\\$\\{${name}:-`));
    }
  });

  it('uses one Postgres password, overridable, in every database URL', () => {
    const text = readFileSync('docker-compose.yml', 'utf8');
    expect(compose.services['postgres']!.environment!['POSTGRES_PASSWORD']).toBe(`\${POSTGRES_PASSWORD:-postgres}`);
    const urls = [...text.matchAll(/postgres:\/\/[^\s]+/g)].map((m) => m[0]);
    expect(urls.length).toBe(2);
    for (const url of urls) expect(url).toMatch(/^postgres:\/\/postgres:\$\{POSTGRES_PASSWORD:-postgres\}@postgres:5432\//);
  });

  it('gives the same Unleash tokens to Unleash and to the control plane', () => {
    const unleash = compose.services['unleash']!.environment!;
    expect(unleash['INIT_BACKEND_API_TOKENS']).toBe(controlPlane.environment!['UNLEASH_API_TOKEN']);
    expect(unleash['INIT_ADMIN_API_TOKENS']).toBe(controlPlane.environment!['UNLEASH_ADMIN_TOKEN']);
  });

  it('lets the control plane drain on stop: stop_grace_period above SHUTDOWN_TIMEOUT_MS + the closing grace', () => {
    const shutdownMs = Number(SETTINGS.find((s) => s.env === 'SHUTDOWN_TIMEOUT_MS')!.default);
    const grace = /^(\d+)s$/.exec(controlPlane.stop_grace_period ?? '');
    expect(grace, 'stop_grace_period in seconds').not.toBeNull();
    expect(Number(grace![1]) * 1000).toBeGreaterThan(shutdownMs + CLOSE_GRACE_MS);
  });

  it('restarts every service unless stopped', () => {
    for (const [name, service] of Object.entries(compose.services)) expect(service.restart, name).toBe('unless-stopped');
  });

  it("checks the control plane's health with the image's command", () => {
    const [kind, ...command] = controlPlane.healthcheck!.test;
    expect(kind).toBe('CMD');
    const [healthcheck] = instruction('HEALTHCHECK');
    expect(healthcheck).toBeDefined();
    expect(execForm(healthcheck!)).toEqual(command);
  });
});

describe('Dockerfile', () => {
  it('runs node directly with the command line of npm start, as a user other than root', () => {
    const [cmd] = instruction('CMD');
    expect(cmd).toBeDefined();
    expect(execForm(cmd!).join(' ')).toBe(startScript.replace(/^exec /, ''));
    const users = instruction('USER').map((l) => l.slice(5).trim());
    expect(users.length).toBeGreaterThan(0);
    expect(users.at(-1)).not.toMatch(/^(root|0)(:|$)/);
    expect(finalStage.findIndex((l) => l.startsWith('USER '))).toBeLessThan(finalStage.findIndex((l) => l.startsWith('CMD ')));
  });

  it('sets a DATA_DIR the user owns and runs a health check script that exists', () => {
    expect(instruction('ENV')).toContain('ENV DATA_DIR=/var/lib/killswitch');
    expect(dockerfile).toMatch(/chown node:node \/var\/lib\/killswitch/);
    const [healthcheck] = instruction('HEALTHCHECK');
    const script = execForm(healthcheck!).find((a) => a.startsWith('/app/'));
    expect(script && existsSync(script.slice('/app/'.length))).toBe(true);
  });
});

describe('.dockerignore', () => {
  it('keeps .env files out of the image', () => {
    const lines = readFileSync('.dockerignore', 'utf8').split('\n');
    expect(lines).toContain('.env');
    expect(lines).toContain('.env.*');
  });

  it('keeps registry tokens, key files and the fake credentials of tests and benchmarks out of the image', () => {
    const lines = readFileSync('.dockerignore', 'utf8').split('\n');
    for (const entry of ['.npmrc', '*.pem', '*.key', 'test', 'scripts/bench']) expect(lines).toContain(entry);
    // What the image runs is still in it: the health check, the embedded Unleash's launcher.
    expect(lines.some((l) => l === 'scripts' || l === 'scripts/docker' || l === 'scripts/unleash')).toBe(false);
  });
});

describe('docker-compose.yml: the control plane', () => {
  it('drops every Linux capability and cannot gain privileges (it runs as node on port 8080)', () => {
    const service = controlPlane as Service & { cap_drop?: string[]; security_opt?: string[] };
    expect(service.cap_drop).toEqual(['ALL']);
    expect(service.security_opt).toContain('no-new-privileges:true');
  });
});

describe('npm start', () => {
  it('execs node, so the signals npm forwards reach the control plane (sh -c does not exec its last command)', () => {
    expect(startScript).toMatch(/^exec node /);
  });
});

/** Every .ts/.js file under a folder, recursively. */
function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const path = join(dir, e.name);
    if (e.isDirectory()) return sourceFiles(path);
    return /\.(ts|js|mjs)$/.test(e.name) ? [path] : [];
  });
}

describe('package.json dependencies', () => {
  it('declare every package the product imports at run time (the image installs only these: npm ci --omit=dev)', () => {
    const pkg = JSON.parse(readFileSync('package.json', 'utf8')) as { dependencies: Record<string, string> };
    const declared = new Set(Object.keys(pkg.dependencies));
    const missing = new Set<string>();
    for (const file of [...sourceFiles('src'), ...sourceFiles('bin'), ...sourceFiles('scripts/docker')]) {
      const text = readFileSync(file, 'utf8');
      // Static imports and re-exports (type-only ones are erased), and dynamic imports.
      const statements = text.matchAll(/(?:^|\n)\s*(import|export)\s+(type\s+)?[^;'"]*?from\s+'([^']+)'|import\('([^']+)'\)/g);
      for (const [, , typeOnly, fromSpecifier, dynamicSpecifier] of statements) {
        const specifier = fromSpecifier ?? dynamicSpecifier;
        if (typeOnly || !specifier || specifier.startsWith('.') || specifier.startsWith('node:')) continue;
        const name = specifier.startsWith('@') ? specifier.split('/').slice(0, 2).join('/') : specifier.split('/')[0]!;
        if (!declared.has(name)) missing.add(`${name} (${file})`);
      }
    }
    expect([...missing]).toEqual([]);
  });
});
