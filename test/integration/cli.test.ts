import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { killswitch } from '../helpers/cli.js';
import { TestContext } from '../helpers/context.js';
import { freePort } from '../helpers/unleash.js';

const t = new TestContext();
beforeAll(() => t.setup());
afterAll(() => t.teardown());

const cli = (args: string[], env: Record<string, string> = {}, cwd?: string) => killswitch(args, { env, ...(cwd ? { cwd } : {}) });

describe('killswitch CLI: config check, --version and what start refuses before it connects', () => {
  it('config check: invalid configuration → message naming the variable, exit 2', async () => {
    const bad = await cli(['config', 'check'], { PORT: 'eighty' });
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('PORT');
    expect(bad.stderr).toContain('Example: PORT=8080');
    const ok = await cli(['config', 'check'], { PORT: '9999' });
    expect(ok.code).toBe(0);
  });

  it('--version prints the installed version (exit 0); a usage error exits 2', async () => {
    const version = await cli(['--version']);
    expect(version.code).toBe(0);
    expect(version.stdout.trim()).toBe((JSON.parse(readFileSync('package.json', 'utf8')) as { version: string }).version);
    const unknown = await cli(['audit', 'verify', '--colour']);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toContain("unknown option '--colour'");
    // A command without its subcommand is a usage error too: commander's exit 1 read as `audit verify`'s "broken chain".
    for (const args of [['audit'], ['operators'], []]) {
      const missing = await cli(args);
      expect(missing.code, args.join(' ')).toBe(2);
      expect(missing.stderr).toContain(`Usage: killswitch ${args.join(' ')}`.trim());
    }
    expect((await cli(['help', 'kill'])).code).toBe(0);
    expect((await cli(['audit', '--help'])).code).toBe(0);
    // Every break-glass command says its exit codes (scripts and the runbook depend on them).
    for (const command of ['kill', 'kills', 'unkill', 'status', 'revoke', 'resume', 'audit search']) {
      const help = await cli([...command.split(' '), '--help']);
      expect(help.code, command).toBe(0);
      expect(help.stdout, command).toMatch(/Exit codes: 0 .*; 1 .*;\s+2 bad usage or configuration/s);
    }
  });

  it('config check and start refuse UNLEASH_API_TOKEN of another environment, a malformed BOOTSTRAP_OWNER_KEY, and UNLEASH_URL or PUBLIC_URL that are not http(s) URLs: exit 2 before anything connects', async () => {
    // Nothing listens on port 1: a start that connected before checking would fail on Postgres (exit 1) instead.
    const base = { DATABASE_URL: 'postgres://postgres@127.0.0.1:1/killswitch', UNLEASH_URL: 'http://127.0.0.1:1/api', PORT: '0', LOG_LEVEL: 'warn' };
    const cases: Array<[Record<string, string>, string]> = [
      [{ UNLEASH_API_TOKEN: 'default:development.x', UNLEASH_ENVIRONMENT: 'production' }, 'UNLEASH_API_TOKEN is for Unleash environment "development" but UNLEASH_ENVIRONMENT=production'],
      [{ BOOTSTRAP_OWNER_KEY: 'ksop_my-own-owner-key-1234' }, 'BOOTSTRAP_OWNER_KEY=(hidden) is invalid'],
      [{ UNLEASH_URL: 'not-a-url' }, 'UNLEASH_URL="not-a-url" is invalid: expected an http(s) URL'],
      [{ UNLEASH_URL: 'unleash.internal:4242' }, 'UNLEASH_URL="unleash.internal:4242" is invalid: expected an http(s) URL'],
      [{ PUBLIC_URL: 'not-a-url' }, 'PUBLIC_URL="not-a-url" is invalid: expected an http(s) URL'],
    ];
    for (const [env, message] of cases) {
      for (const command of [['config', 'check'], ['start']]) {
        const res = await cli(command, { ...base, ...env });
        expect(res.code, `${command.join(' ')} ${JSON.stringify(env)}: ${res.stderr}`).toBe(2);
        expect(res.stderr).toContain(`killswitch: configuration error: ${message}`);
        expect(res.stderr).not.toContain('my-own-owner-key');
      }
    }
  }, 120_000);

  it('config check warns (exit 0) when UNLEASH_URL does not end in /api, naming the form it expects', async () => {
    const res = await cli(['config', 'check'], { UNLEASH_URL: 'http://127.0.0.1:4242' });
    expect(res.code, res.stderr).toBe(0);
    expect(res.stderr).toContain('killswitch: warning: UNLEASH_URL=http://127.0.0.1:4242 does not end in /api');
    expect(res.stderr).toContain('Expected: UNLEASH_URL=http://127.0.0.1:4242/api');
    const ok = await cli(['config', 'check'], { UNLEASH_URL: 'http://127.0.0.1:4242/api' });
    expect(ok.code).toBe(0);
    expect(ok.stderr).toBe('');
  });

  it('config check warns when a server\'s max_execution_time_seconds is not below DECISION_META_TTL_S (the limit could never fire)', async () => {
    const file = resolve(tmpdir(), `ks-inert-limit-${process.pid}.yaml`);
    writeFileSync(file, readFileSync('policy/default.yaml', 'utf8').replace('max_execution_time_seconds: 30', 'max_execution_time_seconds: 7200'));
    const res = await cli(['config', 'check'], { POLICY_FILE: file, UNLEASH_URL: 'http://127.0.0.1:4242/api' });
    expect(res.code, res.stderr).toBe(0);
    expect(res.stderr).toMatch(/killswitch: warning: servers\.\S+\.max_execution_time_seconds is 7200, not below DECISION_META_TTL_S=3600/);
    const raised = await cli(['config', 'check'], { POLICY_FILE: file, UNLEASH_URL: 'http://127.0.0.1:4242/api', DECISION_META_TTL_S: '7201' });
    expect(raised.code).toBe(0);
    expect(raised.stderr).not.toContain('max_execution_time_seconds');
  });

  it('a POLICY_FILE missing from the working directory: config check and start exit 2 naming POLICY_FILE and the absolute path', async () => {
    const elsewhere = tmpdir();
    for (const command of [['config', 'check'], ['start']]) {
      const res = await cli(command, { DATABASE_URL: 'postgres://postgres@127.0.0.1:1/killswitch', UNLEASH_URL: 'http://127.0.0.1:1/api', PORT: '0', POLICY_FILE: '' }, elsewhere);
      expect(res.code, `${command.join(' ')}: ${res.stderr}`).toBe(2);
      expect(res.stderr).toContain(`killswitch: configuration error: POLICY_FILE="policy/default.yaml" is invalid: no file at ${resolve(elsewhere, 'policy/default.yaml')}`);
      expect(res.stderr).toContain(`resolved against the working directory, ${elsewhere}`);
    }
  });

  it('an invalid POLICY_FILE: config check and start exit 2 with the policy errors (file:line:column) first, before the flags sync or anything else starts', async () => {
    // Nothing listens on port 1: a start that went on to the flags sync or Postgres would log that first, or exit 1.
    const env = { DATABASE_URL: 'postgres://postgres@127.0.0.1:1/killswitch', UNLEASH_URL: 'http://127.0.0.1:1/api', PORT: '0', LOG_LEVEL: 'info', POLICY_FILE: 'test/fixtures/policy/broken.yaml' };
    for (const command of [['config', 'check'], ['start']]) {
      const res = await cli(command, env);
      expect(res.code, `${command.join(' ')}: ${res.stdout}${res.stderr}`).toBe(2);
      expect(res.stdout).toBe('');
      const lines = res.stderr.split('\n');
      expect(lines[0]).toBe('killswitch: invalid policy file test/fixtures/policy/broken.yaml (POLICY_FILE), 1 error; fix it (`killswitch policy check test/fixtures/policy/broken.yaml`):');
      expect(lines[1]).toMatch(/^test\/fixtures\/policy\/broken\.yaml:11:41 roles\.code_agent\.allowed_servers\.development\[2\]: unknown server "shel"/);
      expect(res.stderr).not.toContain('flags sync');
    }
  }, 60_000);

  it('a policy file with more errors than are listed: config check and start count them all, as policy check does (the "N more" line is not one error)', async () => {
    mkdirSync(t.dataDir, { recursive: true });
    const file = resolve(t.dataDir, 'many-errors.yaml');
    // 150 servers without `identity` and no `roles`: 151 errors.
    writeFileSync(file, `servers:\n${Array.from({ length: 150 }, (_, i) => `  s${i}: { map: filesystem }\n`).join('')}`);
    const check = await cli(['policy', 'check', file]);
    expect(check.code).toBe(2);
    expect(check.stderr.trim().split('\n').at(-1)).toBe(`${file}: invalid policy (151 errors)`);
    const env = { DATABASE_URL: 'postgres://postgres@127.0.0.1:1/killswitch', UNLEASH_URL: 'http://127.0.0.1:1/api', PORT: '0', POLICY_FILE: file };
    for (const command of [['config', 'check'], ['start']]) {
      const res = await cli(command, env);
      expect(res.code, command.join(' ')).toBe(2);
      expect(res.stderr.split('\n')[0]).toBe(`killswitch: invalid policy file ${file} (POLICY_FILE), 151 errors; fix it (\`killswitch policy check ${file}\`):`);
      expect(res.stderr).toContain('51 more errors from here on, not listed (only the first 100 problems are)');
    }
  }, 60_000);

  it('output into a pipe the reader closed early (`| head -3`) ends quietly, exit 0 (it printed an EPIPE stack, exit 1)', async () => {
    const child = spawn('node', ['bin/killswitch.js', 'config', 'check'], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, POLICY_FILE: 'policy/default.yaml' } });
    child.stdout.destroy();
    let stderr = '';
    child.stderr.on('data', (c: Buffer) => {
      stderr += c.toString('utf8');
    });
    const [code] = (await once(child, 'close')) as [number | null];
    expect(stderr).not.toContain('EPIPE');
    expect(code).toBe(0);
  });

  it('start with an unreachable Postgres names the setting and host:port (never the password): DATABASE_URL, or UNLEASH_DATABASE_URL of the embedded Unleash', async () => {
    const env = { REDIS_PREFIX: t.redisPrefix, DATA_DIR: t.dataDir, PORT: '0', LOG_LEVEL: 'warn', TOKEN_HASH_SECRET: 'test-secret-test-secret-test-secret-1234' };
    const db = await cli(['start'], { ...env, UNLEASH_URL: 'http://127.0.0.1:1/api', DATABASE_URL: 'postgres://killswitch:pw-never-printed@127.0.0.1:1/killswitch' });
    expect(db.code, db.stderr).toBe(1);
    expect(db.stderr).toContain('killswitch: cannot connect to Postgres at 127.0.0.1:1, database killswitch, user killswitch (DATABASE_URL): connect ECONNREFUSED 127.0.0.1:1');
    expect(db.stdout + db.stderr).not.toContain('pw-never-printed');
    // Stopped before the flags sync, which would have pointed Unleash's webhook at a replica that never starts.
    expect(db.stdout + db.stderr).not.toContain('flags sync');

    const embedded = await cli(['start'], {
      ...env,
      UNLEASH_URL: '',
      UNLEASH_PORT: String(await freePort()),
      UNLEASH_DATABASE_URL: 'postgres://unleash:pw-never-printed@127.0.0.1:1/unleash',
      DATABASE_URL: t.databaseUrl,
    });
    expect(embedded.code, embedded.stderr).toBe(1);
    expect(embedded.stderr).toContain('killswitch: cannot connect to Postgres at 127.0.0.1:1, database unleash, user unleash (UNLEASH_DATABASE_URL): connect ECONNREFUSED 127.0.0.1:1');
    expect(embedded.stdout + embedded.stderr).not.toContain('pw-never-printed');
  }, 90_000);

  it('start refuses a TOKEN_HASH_SECRET other than the one the database was started with: exit 2 naming it', async () => {
    // This file's database records the fingerprint of the tests' secret.
    await t.close(await t.app());
    // One process, and the primary of WORKERS > 1 (it runs the flags sync itself).
    for (const workers of ['1', '2']) {
      const res = await cli(['start'], {
        DATABASE_URL: t.databaseUrl,
        REDIS_PREFIX: t.redisPrefix,
        DATA_DIR: t.dataDir,
        UNLEASH_URL: 'http://127.0.0.1:1/api',
        PORT: '0',
        LOG_LEVEL: 'warn',
        WORKERS: workers,
        TOKEN_HASH_SECRET: 'another-secret-another-secret-another-1234',
      });
      expect(res.code, `WORKERS=${workers}: ${res.stderr}`).toBe(2);
      expect(res.stderr).toContain("killswitch: configuration error: TOKEN_HASH_SECRET: this database's credentials (operator keys, gateway keys, agent tokens) were hashed with another secret");
      // Refused before the flags sync, which would have pointed Unleash's webhook at this refused replica
      // (taking it from the running ones): nothing tried to reach Unleash (UNLEASH_URL answers nothing here).
      expect(res.stdout + res.stderr, `WORKERS=${workers}`).not.toContain('flags sync');
      expect(res.stdout + res.stderr).not.toContain('another-secret-another');
    }
  }, 90_000);
});
