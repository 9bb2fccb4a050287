import { buildApp } from '../app.js';
import type { Config } from '../config.js';

/** Creates an operator key directly in the database (bootstrap, scripts, recovery of a lost owner key). */
export async function operatorsCreate(config: Config, opts: { name: string; role: 'viewer' | 'operator' | 'owner'; project?: string[] }): Promise<string> {
  const app = await buildApp({ ...config, logLevel: 'warn' }, { logStream: process.stderr });
  try {
    const created = await app.ctx.credentials.createOperatorKey('cli', { name: opts.name, role: opts.role, projects: opts.project });
    return created.key;
  } finally {
    await app.close();
  }
}
