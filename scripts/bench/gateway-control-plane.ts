import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { type Config, loadConfig } from '../../src/config.js';

/**
 * The control plane a gateway benchmark starts in process (gateway.ts, gateway-agents.ts): its own
 * databases `ks_bench_<name>_<tag>` and `ks_bench_<name>_unleash_<tag>` on `pgUrl`'s server, Redis keys
 * under `ksbench:<name>:<tag>:`, a fresh TOKEN_HASH_SECRET, DATA_DIR in `dir`, warn-level logs.
 */
export function benchControlPlaneConfig(o: { name: string; tag: string; pgUrl: string; redisUrl: string; policyFile: string; dir: string; unleashPort: number }): { config: Config; dbName: string } {
  const dbName = `ks_bench_${o.name}_${o.tag}`;
  const dbUrl = (name: string) => Object.assign(new URL(o.pgUrl), { pathname: `/${name}` }).toString();
  const config = loadConfig(process.env, {
    host: '127.0.0.1',
    port: 0,
    logLevel: 'warn',
    databaseUrl: dbUrl(dbName),
    redisUrl: o.redisUrl,
    redisPrefix: `ksbench:${o.name}:${o.tag}:`,
    policyFile: o.policyFile,
    tokenHashSecret: randomBytes(32).toString('hex'),
    unleashDatabaseUrl: dbUrl(`ks_bench_${o.name}_unleash_${o.tag}`),
    unleashPort: o.unleashPort,
    dataDir: join(o.dir, '.killswitch'),
  });
  return { config, dbName };
}
