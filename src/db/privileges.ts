import pg from 'pg';
import { ConfigError } from '../config.js';

// What the DATABASE_URL user must be allowed to do, told before anything fails half-way. On a managed
// Postgres (RDS, Cloud SQL, Azure) that user is no superuser: it may lack CREATE on the schema (Postgres 15
// grants CREATE on `public` only to the database's owner), CREATEROLE (a DBA creates the roles), or, from
// Postgres 16 on, the right to switch to a role it did not create with that option (docs/operations.md,
// "Managed Postgres").

/** The limited role the request path writes audit rows as (migrations/0002_audit.sql and 0021). */
export const AUDIT_WRITER_ROLE = 'killswitch_audit_writer';

/** Where every message below sends the reader. */
export const MANAGED_POSTGRES_DOC = 'docs/operations.md, "Managed Postgres"';

/** Postgres 16 made switching to a role (SET ROLE) a grant option of its own: CREATEROLE no longer gives it. */
const PG16 = 160_000;

/** What the connected user may do in its database, as far as the control plane's migrations and audit writer need. */
export interface DatabaseAccess {
  user: string;
  database: string;
  /** server_version_num, e.g. 150020. */
  version: number;
  superuser: boolean;
  createrole: boolean;
  /** The schema asked about: the one the tables are (or would be) created in; null when no schema of the search_path exists. */
  schema: string | null;
  searchPath: string;
  /** The user may create tables in `schema`. */
  schemaCreate: boolean;
  /** The user owns `schema` (or inherits its owner): it can grant USAGE on it itself. */
  ownsSchema: boolean;
  writerExists: boolean;
  /** The user may switch to the writer role (SET ROLE): membership before Postgres 16, the SET option from 16 on. */
  writerSet: boolean;
  /** The user may grant the writer role to itself: ADMIN OPTION on it, superuser, or (before Postgres 16) CREATEROLE. */
  writerGrant: boolean;
  /** The writer role may use `schema` (USAGE). */
  writerUsage: boolean;
}

type Query = <R extends pg.QueryResultRow>(text: string, values?: unknown[]) => Promise<{ rows: R[] }>;

/**
 * Reads the connected user's access. `schema`: the schema to judge (where the tables are); default the
 * first existing schema of the search_path, where CREATE TABLE puts a new table.
 */
export async function readDatabaseAccess(query: Query, schema?: string): Promise<DatabaseAccess> {
  // Named as DatabaseAccess's fields: the row is the access, the writer's three fields added below.
  const { rows } = await query<Omit<DatabaseAccess, 'writerSet' | 'writerGrant' | 'writerUsage'>>(
    `SELECT current_user AS "user", current_database() AS database, current_setting('server_version_num')::int AS version,
       r.rolsuper AS superuser, r.rolcreaterole AS createrole, s.name AS schema, current_setting('search_path') AS "searchPath",
       coalesce(has_schema_privilege(s.name, 'CREATE'), false) AS "schemaCreate",
       coalesce((SELECT pg_has_role(n.nspowner, 'USAGE') FROM pg_namespace n WHERE n.nspname = s.name), false) AS "ownsSchema",
       to_regrole($1) IS NOT NULL AS "writerExists"
     FROM pg_roles r, (SELECT coalesce($2::text, current_schema()::text) AS name) s
     WHERE r.rolname = current_user`,
    [AUDIT_WRITER_ROLE, schema ?? null],
  );
  const a = rows[0]!;
  let writer = { set: false, admin: false, usage: false };
  if (a.writerExists) {
    // 'SET' is no privilege name before Postgres 16 (an error there), where membership is what SET ROLE needs.
    const setPrivilege = a.version >= PG16 ? 'SET' : 'MEMBER';
    writer = (
      await query<{ set: boolean; admin: boolean; usage: boolean }>(
        `SELECT pg_has_role($1, $2) AS set, pg_has_role($1, 'MEMBER WITH ADMIN OPTION') AS admin,
           coalesce(has_schema_privilege($1, $3::text, 'USAGE'), false) AS usage`,
        [AUDIT_WRITER_ROLE, setPrivilege, a.schema],
      )
    ).rows[0]!;
  }
  return {
    ...a,
    writerSet: a.superuser || writer.set,
    writerGrant: a.superuser || writer.admin || (a.version < PG16 && a.createrole),
    writerUsage: writer.usage,
  };
}

const ident = (name: string) => pg.escapeIdentifier(name);
/** A sentence of its own after a full stop. */
const sentence = (text: string) => text.charAt(0).toUpperCase() + text.slice(1);

/** The GRANT that lets `user` switch to the writer role (SET TRUE named from 16 on: a grant the user has without it is then changed, not left as it is). */
function grantWriter(a: DatabaseAccess): string {
  return `GRANT ${AUDIT_WRITER_ROLE} TO ${ident(a.user)}${a.version >= PG16 ? ' WITH SET TRUE' : ''};`;
}

function createWriter(a: DatabaseAccess): string {
  return `the role ${AUDIT_WRITER_ROLE} (the audit writer's) does not exist, and ${ident(a.user)} may not create it (it has no CREATEROLE). The DBA runs: CREATE ROLE ${AUDIT_WRITER_ROLE} NOLOGIN; GRANT ${AUDIT_WRITER_ROLE} TO ${ident(a.user)};`;
}

function switchToWriter(a: DatabaseAccess): string {
  const why =
    a.version >= PG16
      ? `it has no ADMIN OPTION on the role${a.createrole ? ', which from Postgres 16 on CREATEROLE alone does not give' : ''}`
      : 'it has neither CREATEROLE nor ADMIN OPTION on the role';
  return `${ident(a.user)} may not switch to the role ${AUDIT_WRITER_ROLE} (the audit writer's) and may not grant it to itself (${why}). A role with ADMIN OPTION on ${AUDIT_WRITER_ROLE} (the one that created it, or a superuser) runs: ${grantWriter(a)}`;
}

function writerUsage(a: DatabaseAccess, schema: string): string {
  return `the role ${AUDIT_WRITER_ROLE} (the audit writer's) may not use the schema ${ident(schema)} (no USAGE), and ${ident(a.user)} does not own that schema to grant it. The DBA runs, connected to the database ${ident(a.database)}: GRANT USAGE ON SCHEMA ${ident(schema)} TO ${AUDIT_WRITER_ROLE};`;
}

/**
 * What keeps the migrations from running, one sentence each with what the DBA runs: empty when they can.
 * `fresh`: no schema_migrations table yet, so the first migration creates tables in the schema (an upgrade
 * of a database that has them may need no CREATE on the schema, and is not refused for it here).
 */
export function migrationPrivilegeProblems(a: DatabaseAccess, fresh: boolean): string[] {
  if (a.superuser) return [];
  const problems: string[] = [];
  if (a.schema === null) {
    problems.push(
      `no schema of ${ident(a.user)}'s search_path (${a.searchPath}) exists in the database ${ident(a.database)}, so there is nowhere to create the tables. The DBA runs, connected to that database: CREATE SCHEMA AUTHORIZATION ${ident(a.user)};`,
    );
  } else if (fresh && !a.schemaCreate) {
    const schema = ident(a.schema);
    problems.push(
      `${ident(a.user)} may not create tables in the schema ${schema} of the database ${ident(a.database)}${a.schema === 'public' ? ' (from Postgres 15 on, only the database owner may, unless granted)' : ''}. The DBA runs, connected to that database, one of: GRANT CREATE ON SCHEMA ${schema} TO ${ident(a.user)}; or CREATE SCHEMA AUTHORIZATION ${ident(a.user)}; (a schema named after the user comes first on the default search_path: the tables then go there)`,
    );
  }
  if (!a.writerExists && !a.createrole) problems.push(createWriter(a));
  if (a.writerExists && !a.writerSet && !a.writerGrant) problems.push(switchToWriter(a));
  if (a.writerExists && a.schema !== null && !a.writerUsage && !a.ownsSchema) problems.push(writerUsage(a, a.schema));
  return problems;
}

/** The refusal of a start or migration that lacks privileges: every problem, and that nothing was changed. */
export function missingPrivileges(a: DatabaseAccess, problems: string[]): ConfigError {
  const numbered = problems.length === 1 ? sentence(problems[0]!) : problems.map((p, i) => `(${i + 1}) ${p}`).join(' ');
  return new ConfigError(
    'DATABASE_URL',
    `the DATABASE_URL user ${ident(a.user)} lacks privileges the control plane needs in the database ${ident(a.database)}; nothing was changed. ${numbered} Then start again (${MANAGED_POSTGRES_DOC}).`,
  );
}

/**
 * Why the audit writer's connection (the DATABASE_URL user switched to the writer role, search_path the
 * tables' schema) was refused, with what the DBA runs; `refusal` is Postgres's own message. `a` is read
 * on the owner's connection for the tables' schema.
 */
export function auditWriterRefused(a: DatabaseAccess, refusal: string): ConfigError {
  let fix: string;
  if (!a.writerExists) fix = createWriter(a);
  else if (!a.writerSet) fix = a.writerGrant ? `${ident(a.user)} may not switch to the role ${AUDIT_WRITER_ROLE} (the audit writer's), but may grant it to itself: run, as ${ident(a.user)}: ${grantWriter(a)}` : switchToWriter(a);
  else if (a.schema !== null && !a.writerUsage) fix = writerUsage(a, a.schema);
  else fix = `the role ${AUDIT_WRITER_ROLE} needs SELECT and INSERT on audit_events, which the migrations grant: run, as ${ident(a.user)}: GRANT SELECT, INSERT ON audit_events TO ${AUDIT_WRITER_ROLE};`;
  return new ConfigError(
    'DATABASE_URL',
    `the audit writer cannot write to the database ${ident(a.database)}: ${refusal}. ${sentence(fix)} Stopped here: written through this writer, every audit row would stay in the local spool (DATA_DIR) and never reach Postgres (${MANAGED_POSTGRES_DOC}).`,
  );
}

/** The writer's connection runs as `who`, not as the writer role: the connection option `-c role=` never reached Postgres. */
export function writerNotSwitched(who: string): ConfigError {
  return new ConfigError(
    'DATABASE_URL',
    `the audit writer's connections run as ${ident(who)}, not as the role ${AUDIT_WRITER_ROLE}: the connection option -c role=${AUDIT_WRITER_ROLE} never reached Postgres (a connection pooler between the control plane and Postgres, such as PgBouncer with options in ignore_startup_parameters, drops it). Point DATABASE_URL at Postgres itself, or at a pooler that passes the startup parameter options through. Stopped here: the writer must never write as the owner (${MANAGED_POSTGRES_DOC}).`,
  );
}
