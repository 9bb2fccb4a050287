import type { FastifyInstance } from 'fastify';
import { pino } from 'pino';
import { bootstrapOwner, buildApp } from './app.js';
import type { Config } from './config.js';
import { prepareUnleash } from './flags/setup.js';
import { loggerOptions } from './log.js';

/** Builds the app and listens; prints the bootstrap owner key once on an empty database. */
export async function startServer(startConfig: Config): Promise<FastifyInstance> {
  // Unleash first (embedded unless UNLEASH_URL is set) and the flags sync, so the control plane starts with every flag.
  const { config, embedded } = await prepareUnleash(startConfig, pino(loggerOptions(startConfig.logLevel)));
  let app: FastifyInstance;
  try {
    app = await buildApp(config);
  } catch (err) {
    await embedded?.stop();
    throw err;
  }
  if (embedded) {
    let closing = false;
    app.addHook('onClose', async () => {
      closing = true;
      await embedded.stop();
    });
    void embedded.exited.then((code) => {
      if (!closing) app.log.error({ exit_code: code }, 'embedded Unleash exited: the last fetched flags stay in force (staleness alert follows); restart the control plane');
    });
  }
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
