import type { FastifyInstance } from 'fastify';
import { bootstrapOwner, buildApp } from './app.js';
import type { Config } from './config.js';

/** Builds the app and listens; prints the bootstrap owner key once on an empty database. */
export async function startServer(config: Config): Promise<FastifyInstance> {
  const app = await buildApp(config);
  const ownerKey = await bootstrapOwner(app);
  if (ownerKey && !config.bootstrapOwnerKey) {
    // Printed once, on purpose outside the (redacting) logger: this is the only time it can be shown.
    process.stdout.write(
      `\n  First start: created an owner operator key. It is shown only now; store it safely:\n\n    ${ownerKey}\n\n  Use it as "Authorization: Bearer <key>" on the admin API. Lost it? Run: killswitch operators create --role owner --name NAME\n\n`,
    );
  }
  await app.listen({ host: config.host, port: config.port });
  return app;
}
