// The baseline of scripts/bench/decisions.ts: a Fastify hello world, the ceiling of this machine.
import Fastify from 'fastify';

const app = Fastify({ logger: false });
app.get('/', async () => ({ hello: 'world' }));
await app.listen({ host: '127.0.0.1', port: Number(process.argv[2] ?? 18081) });
