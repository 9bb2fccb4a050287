import { readdir } from 'node:fs/promises';
import { pino } from 'pino';
import { Value } from 'typebox/value';
import { describeDatabase, printChainHead } from '../audit/commands.js';
import { AuditService } from '../audit/service.js';
import { ClockOffset } from '../clock/offset.js';
import { type Config, settingSource } from '../config.js';
import { MIGRATIONS_DIR } from '../db/migrate.js';
import { createPool, type Pool } from '../db/pool.js';
import { loggerOptions } from '../log.js';
import { hashCredential } from '../tokens/format.js';
import { nameProblem } from '../tokens/names.js';
import { CreateOperatorKeyBody } from '../tokens/schemas.js';
import { hashSecretFingerprint, SECRET_FINGERPRINT } from '../tokens/secret-fingerprint.js';
import { CredentialService } from '../tokens/service.js';
import { credentialStore } from '../tokens/store.js';
import { CliFailure } from './kill.js';

// `killswitch operators create`: an operator key made directly in the database (bootstrap, scripts,
// recovery of a lost owner key). Needs only Postgres: it works while Redis or Unleash are down, which is
// when it is most needed. It only ever adds a key to the control plane's existing database: a key hashed
// with another secret than the control plane's, or written to a database the control plane does not
// use, would be printed as if it worked and never authenticate.

export const OPERATOR_ROLES = ['viewer', 'operator', 'owner'] as const;
export type OperatorRole = (typeof OPERATOR_ROLES)[number];

export interface OperatorsCreateOptions {
  name: string;
  role?: string;
  project?: string[];
}

/** The role asked for; no default, since an owner key is what a mistyped command must not make. */
export function operatorRole(role: string | undefined): OperatorRole {
  const roles = OPERATOR_ROLES.join(', ');
  if (role === undefined) throw new CliFailure(`--role is required: one of ${roles}`, 2);
  if (!(OPERATOR_ROLES as readonly string[]).includes(role)) throw new CliFailure(`--role ${role}: expected one of ${roles}`, 2);
  return role as OperatorRole;
}

/**
 * The name, checked as POST /v1/operator-keys checks it: it is echoed in alerts and audit rows, and this
 * command is the one way to make a key that the route's check does not see first.
 */
export function operatorName(name: string): string {
  const problem = nameProblem(name);
  // Not echoed: a name refused for a bidi override or a control character would garble the message.
  if (problem) throw new CliFailure(`--name: ${problem}`, 2);
  return name;
}

/** A value as typed, safe on a terminal: control characters, bidi marks and everything else not ASCII escaped. */
const shown = (v: string): string => JSON.stringify(v).replace(/[^\x20-\x7e]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);

/**
 * The projects, checked against POST /v1/operator-keys' own schema for `projects`: a project id the route
 * would refuse makes a key limited to a project no token can belong to, or one holding characters that
 * garble the lists, alerts and audit rows it is shown in.
 */
export function operatorProjects(projects: string[] | undefined): string[] | undefined {
  if (projects === undefined) return undefined;
  const schema = CreateOperatorKeyBody.properties.projects;
  const { maxItems } = schema as { maxItems?: number };
  const { maxLength } = schema.items as { maxLength?: number };
  for (const p of projects) {
    if (!Value.Check(schema.items, p)) {
      throw new CliFailure(`--project ${shown(p)}: must be 1 to ${maxLength} characters, each an ASCII letter or digit, '.', '_' or '-' (as POST /v1/operator-keys accepts project ids)`, 2);
    }
  }
  const twice = projects.find((p, i) => projects.indexOf(p) !== i);
  if (twice !== undefined) throw new CliFailure(`--project ${shown(twice)}: given more than once`, 2);
  if (!Value.Check(schema, projects)) throw new CliFailure(`--project: at most ${maxItems} projects`, 2);
  return projects;
}

/** Refuses a database that does not exist or that the control plane has not migrated to this version's schema. */
async function requireMigratedDatabase(pool: Pool, databaseUrl: string): Promise<void> {
  const db = describeDatabase(databaseUrl);
  const start = 'start the control plane against it once (`killswitch start` creates and migrates it); this command never creates or migrates a database';
  let applied: Set<number>;
  try {
    const { rows } = await pool.query<{ version: number }>('SELECT version FROM schema_migrations');
    applied = new Set(rows.map((r) => r.version));
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (code === '3D000') throw new CliFailure(`the ${db} named by DATABASE_URL does not exist: set DATABASE_URL to your control plane's database, or ${start}`, 2);
    if (code === '42P01') throw new CliFailure(`the ${db} named by DATABASE_URL is not a migrated killswitch database: set DATABASE_URL to your control plane's database, or ${start}`, 2);
    throw new CliFailure(`cannot read the ${db} named by DATABASE_URL: ${(err as Error).message}`, 1);
  }
  const files = (await readdir(MIGRATIONS_DIR)).filter((f) => /^\d{4}_[\w-]+\.sql$/.test(f));
  const pending = files.filter((f) => !applied.has(Number(f.slice(0, 4)))).sort();
  if (pending.length > 0) {
    throw new CliFailure(`the ${db} named by DATABASE_URL is not migrated to this version (pending: ${pending.join(', ')}): ${start}`, 2);
  }
}

/**
 * The control plane's hash secret: TOKEN_HASH_SECRET, else the one a control plane started without it
 * stored in the database. Never a new one: the control plane would not know it.
 */
async function controlPlaneSecret(config: Config, pool: Pool, warn: (msg: string) => void): Promise<string> {
  if (config.tokenHashSecret) return config.tokenHashSecret;
  const stored = await credentialStore.getSetting(pool, 'token_hash_secret');
  if (!stored) {
    throw new CliFailure(
      'TOKEN_HASH_SECRET is not set and the database stores none, so the key could not be hashed as your control plane checks it: run this with the control plane\'s TOKEN_HASH_SECRET in the environment',
      2,
    );
  }
  warn(
    'killswitch: TOKEN_HASH_SECRET is not set: using the secret stored in the database (what a control plane started without TOKEN_HASH_SECRET uses). If your control plane sets TOKEN_HASH_SECRET, run this again with the same value: this key would not authenticate there.',
  );
  return stored;
}

/** Refuses a secret whose fingerprint is not the one the control plane recorded: the key would never authenticate. */
async function requireControlPlaneSecret(config: Config, pool: Pool, warn: (msg: string) => void): Promise<string> {
  const secret = await controlPlaneSecret(config, pool, warn);
  const recorded = await credentialStore.getSetting(pool, SECRET_FINGERPRINT);
  if (recorded !== undefined && recorded !== hashSecretFingerprint(secret)) {
    throw new CliFailure(
      `the ${config.tokenHashSecret ? 'TOKEN_HASH_SECRET of this shell' : 'secret stored in the database'} is not the one your control plane hashes credentials with (its fingerprint differs from the one the control plane recorded), so this key would be refused (401): run this again with the control plane's TOKEN_HASH_SECRET in the environment`,
      2,
    );
  }
  return secret;
}

/** Creates the key and returns it (printed once by the caller). Throws CliFailure (exit 1 or 2) when it cannot make a working one. */
export async function operatorsCreate(config: Config, opts: OperatorsCreateOptions, warn: (msg: string) => void = (m) => process.stderr.write(`${m}\n`)): Promise<string> {
  const role = operatorRole(opts.role);
  const name = operatorName(opts.name);
  const projects = operatorProjects(opts.project);
  const pool = createPool(config.databaseUrl, { max: 1 });
  try {
    await requireMigratedDatabase(pool, config.databaseUrl);
    const secret = await requireControlPlaneSecret(config, pool, warn);
    // Audited like a key made through the API (operator_key.created, actor system "cli"): this is the
    // recovery path, the one a security reviewer most wants on the record.
    const log = pino(loggerOptions('warn'), process.stderr);
    // The audit row's time is Postgres's when this machine's clock is off, as a replica's would be.
    const clock = new ClockOffset(pool, log);
    await clock.measure();
    const audit = await AuditService.start(config, pool, log, { retentionJob: false, headLog: false, clock: clock.now });
    let key: string;
    try {
      const credentials = new CredentialService(pool, { hash: (raw) => hashCredential(secret, raw), announceRevoked: async () => {} }, audit, undefined, clock.now);
      key = (await credentials.createOperatorKey('cli', { name, role, projects })).key;
    } finally {
      await audit.close();
    }
    // Which database got the key: with DATABASE_URL missing from this shell, another installation's default.
    warn(`killswitch: operator key created in the ${describeDatabase(config.databaseUrl)} (${settingSource('DATABASE_URL')})`);
    if (!printChainHead(audit))
      warn('killswitch: the operator_key.created audit row went to the local audit spool (DATA_DIR), not to Postgres, so no "audit chain head" line was written for it');
    return key;
  } finally {
    await pool.end();
  }
}
