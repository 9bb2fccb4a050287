import { posix } from 'node:path';
import type { ConfiguredServer, JsonPath } from './parse.js';

// Whether a client config entry runs our own gateway (`killswitch gateway`), and where its config is.
// Such an entry is not an MCP server the policy decides on: the servers that really run are the
// `mcpServers` of the file its `--config` names, so the scan and env-gate check those instead.

export interface GatewayEntry {
  /** The `--config` value as written and where it is; undefined when the entry has none. */
  config: { value: string; at: JsonPath } | undefined;
}

function programOf(command: string): string {
  return posix
    .basename(command.trim().replaceAll('\\', '/'))
    .toLowerCase()
    .replace(/\.(exe|cmd)$/, '');
}

/** Index of the first argument that is not an option (`-y`, `--yes`, `--no-warnings`), or -1. */
function firstOperand(args: readonly string[]): number {
  return args.findIndex((a) => !a.startsWith('-'));
}

/** `node …/bin/killswitch.js gateway`, `npx [-y] killswitch gateway`, `killswitch gateway`: the gateway; else undefined. */
export function gatewayEntryOf(server: Pick<ConfiguredServer, 'command' | 'args'>): GatewayEntry | undefined {
  if (server.command === undefined) return undefined;
  const program = programOf(server.command);
  let from: number;
  if (program === 'killswitch' || program === 'killswitch.js') from = 0;
  else {
    const i = firstOperand(server.args);
    const operand = server.args[i]?.trim();
    if (operand === undefined) return undefined;
    const runs =
      program === 'node' || program === 'nodejs'
        ? posix.basename(operand.replaceAll('\\', '/')) === 'killswitch.js'
        : ['npx', 'pnpx', 'bunx'].includes(program) && (operand === 'killswitch' || operand.startsWith('killswitch@'));
    if (!runs) return undefined;
    from = i + 1;
  }
  if (server.args[from] !== 'gateway') return undefined;
  for (let i = from + 1; i < server.args.length; i++) {
    const a = server.args[i] as string;
    if (a === '--config' && server.args[i + 1] !== undefined) return { config: { value: server.args[i + 1] as string, at: ['args', i + 1] } };
    if (a.startsWith('--config=')) return { config: { value: a.slice('--config='.length), at: ['args', i] } };
  }
  return { config: undefined };
}
