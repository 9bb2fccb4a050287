// The floor of scripts/bench/decisions.ts (DESIGN.md §9): a Fastify route that does what every allowed
// decision must do at the least (one Redis EVALSHA, then wait for its row to be committed by a
// group-committing Postgres writer) and nothing else: no credentials, policy, flags or audit chain.
// Measured in the same run as the hello world and the control plane, it shows how far the machine of
// that moment lets any allow go, and so how much of the decisions' cost is the pipeline's own.
//
//   node --import tsx scripts/bench/minimal.ts PORT DATABASE_URL REDIS_URL REDIS_PREFIX

import Fastify from 'fastify';
import { Redis } from 'ioredis';
import pg from 'pg';

const [port = '18082', databaseUrl = 'postgres://postgres@127.0.0.1:5432/killswitch_bench', redisUrl = 'redis://127.0.0.1:6379', prefix = 'ksbench:minimal:'] = process.argv.slice(2);

const SCRIPT = "local n = redis.call('INCR', KEYS[1]) if n == 1 then redis.call('EXPIRE', KEYS[1], 60) end return n";

const redis = new Redis(redisUrl);
const sha = (await redis.script('LOAD', SCRIPT)) as string;
const pool = new pg.Pool({ connectionString: databaseUrl, max: 2, idleTimeoutMillis: 0 });
await pool.query('CREATE TABLE IF NOT EXISTS bench_minimal (id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT now(), body text NOT NULL)');

/** Leader/follower group commit: a batch goes as soon as the previous one is committed. */
class GroupCommit {
  private queue: Array<{ body: string; done: (err?: Error) => void }> = [];
  private running = false;

  write(body: string): Promise<void> {
    return new Promise((resolve, reject) => {
      this.queue.push({ body, done: (err) => (err ? reject(err) : resolve()) });
      if (!this.running) void this.run();
    });
  }

  private async run(): Promise<void> {
    this.running = true;
    while (this.queue.length > 0) {
      const batch = this.queue.splice(0);
      try {
        await pool.query('INSERT INTO bench_minimal (body) SELECT unnest($1::text[])', [batch.map((b) => b.body)]);
        for (const b of batch) b.done();
      } catch (err) {
        for (const b of batch) b.done(err as Error);
      }
    }
    this.running = false;
  }
}

const writer = new GroupCommit();
const app = Fastify({ logger: false });
app.get('/healthz', async () => ({ ok: true }));
app.post('/', async (req) => {
  const body = req.body as { session_id?: string; tool?: string };
  const n = (await redis.evalsha(sha, 1, `${prefix}${body.session_id ?? 'none'}`)) as number;
  await writer.write(JSON.stringify({ ...body, n }));
  return { decision: 'allow', code: 'OK', n };
});
await app.listen({ host: '127.0.0.1', port: Number(port) });
