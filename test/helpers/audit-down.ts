import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import type { Config } from '../../src/config.js';
import type { TestContext } from './context.js';

let made = 0;

/**
 * A replica whose audit trail takes no row whose action is LIKE `actions` (`'grant.%'`): Postgres refuses
 * them (a trigger on the parent table covers every partition; made before the replica starts, so it races
 * no partition it creates), and its spool directory cannot be created (DATA_DIR lies below a file). Other
 * replicas of the file keep their spool. `restore()` closes the replica first (nothing of it may still be
 * writing to audit_events when the trigger goes), then drops the trigger.
 */
export async function replicaWithoutAudit(t: TestContext, actions: string, overrides: Partial<Config> = {}): Promise<{ app: FastifyInstance; restore: () => Promise<void> }> {
  if (!/^[a-z_.%]+$/.test(actions)) throw new Error(`replicaWithoutAudit: ${actions} is not a plain LIKE pattern`);
  const name = `refuse_audit_rows_${++made}`;
  const db = t.pool();
  await db.query(`CREATE FUNCTION ${name}() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN IF NEW.action LIKE '${actions}' THEN RAISE EXCEPTION 'audit row % refused by the test', NEW.action; END IF; RETURN NEW; END $$`);
  await db.query(`CREATE TRIGGER ${name} BEFORE INSERT ON audit_events FOR EACH ROW EXECUTE FUNCTION ${name}()`);
  mkdirSync(t.dataDir, { recursive: true });
  const file = join(t.dataDir, `${name}-not-a-directory`);
  writeFileSync(file, '');
  const drop = async () => {
    await db.query(`DROP TRIGGER ${name} ON audit_events`);
    await db.query(`DROP FUNCTION ${name}()`);
  };
  const app = await t.app({ ...overrides, dataDir: join(file, 'data') }).catch(async (err: unknown) => {
    await drop();
    throw err;
  });
  return {
    app,
    restore: async () => {
      await t.close(app);
      await drop();
    },
  };
}
