import { Command, InvalidArgumentError } from 'commander';
import { ConfigError, loadConfig } from '../config.js';
import { startServer } from '../server.js';
import { operatorsCreate } from './operators.js';

function config() {
  try {
    return loadConfig();
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`killswitch: configuration error: ${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
}

const program = new Command()
  .name('killswitch')
  .description('Kill switch and control plane for MCP: decide, limit and audit every AI agent tool call.')
  .showHelpAfterError();

program
  .command('start')
  .description('Run the control plane (migrations, decision API, admin API).')
  .action(async () => {
    const app = await startServer(config());
    const stop = async (signal: string) => {
      app.log.info({ signal }, 'shutting down');
      await app.close();
      process.exit(0);
    };
    process.once('SIGINT', () => void stop('SIGINT'));
    process.once('SIGTERM', () => void stop('SIGTERM'));
  });

const operators = program.command('operators').description('Operator keys (direct database access, for bootstrap and recovery).');
operators
  .command('create')
  .description('Create an operator key and print it once.')
  .requiredOption('--name <name>', 'who or what the key is for')
  .option('--role <role>', 'viewer, operator or owner', (v) => {
    if (!['viewer', 'operator', 'owner'].includes(v)) throw new InvalidArgumentError('expected viewer, operator or owner');
    return v;
  }, 'owner')
  .option('--project <id...>', 'limit the key to these projects')
  .action(async (opts: { name: string; role: 'viewer' | 'operator' | 'owner'; project?: string[] }) => {
    const key = await operatorsCreate(config(), opts);
    process.stdout.write(`${key}\n`);
  });

const configCmd = program.command('config').description('Configuration.');
configCmd
  .command('check')
  .description('Validate the configuration from the environment without starting (exit 2 when invalid).')
  .action(() => {
    const c = config();
    process.stdout.write(`configuration ok: port ${c.port}, policy ${c.policyFile}, Unleash ${c.unleashUrl || 'embedded'}\n`);
  });

program.parseAsync().catch((err: unknown) => {
  process.stderr.write(`killswitch: ${(err as Error).message ?? String(err)}\n`);
  process.exit(1);
});
