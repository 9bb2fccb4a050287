import type { CompiledPolicy, CompiledServer } from '../../policy/index.js';
import type { ConfiguredServer } from './parse.js';
import { findSecrets, redactServer } from './secrets.js';

// Which policy server a configured server is. A server is the policy's when it runs the policy's
// identity (same url, or same command and args), whatever its local name; otherwise the policy server
// of the same name is named, and `identityDiffers` says the config runs something else under it.

export interface ConfiguredIdentity {
  name: string;
  command: string | undefined;
  args: readonly string[];
  url: string | undefined;
}

export interface PolicyMatch {
  server: CompiledServer | undefined;
  by: 'identity' | 'name' | undefined;
  /** Matched by name, but the config runs another command or url than the policy's identity. */
  identityDiffers: boolean;
}

function normaliseUrl(raw: string): string {
  try {
    const u = new URL(raw);
    return `${u.protocol}//${u.host.toLowerCase()}${u.pathname.replace(/\/+$/, '')}${u.search}`;
  } catch {
    return raw.trim();
  }
}

export function sameIdentity(policy: CompiledServer['identity'], cfg: ConfiguredIdentity): boolean {
  if (policy.url !== undefined) return cfg.url !== undefined && normaliseUrl(policy.url) === normaliseUrl(cfg.url);
  if (policy.command === undefined || cfg.command !== policy.command) return false;
  return policy.args.length === cfg.args.length && policy.args.every((a, i) => a === cfg.args[i]);
}

export function matchPolicyServer(policy: CompiledPolicy, cfg: ConfiguredIdentity): PolicyMatch {
  for (const server of policy.servers.values()) {
    if (sameIdentity(server.identity, cfg)) return { server, by: 'identity', identityDiffers: false };
  }
  const named = policy.servers.get(cfg.name);
  if (named) return { server: named, by: 'name', identityDiffers: true };
  return { server: undefined, by: undefined, identityDiffers: false };
}

/** The policy server whose identity starts this package (`npx -y <name>`, `uvx <name>@1.2`). */
export function matchPolicyPackage(policy: CompiledPolicy, packageName: string): CompiledServer | undefined {
  const runs = (token: string) => token === packageName || token.startsWith(`${packageName}@`);
  for (const server of policy.servers.values()) {
    const { command, args } = server.identity;
    if ((command !== undefined && runs(command)) || args.some(runs)) return server;
  }
  return undefined;
}

/** A short description of an identity for messages. */
export function describeIdentity(identity: { command?: string | undefined; args: readonly string[]; url?: string | undefined }): string {
  if (identity.url !== undefined) return identity.url;
  return [identity.command ?? '(no command)', ...identity.args].join(' ');
}

/** The policy's identity of a server, with any credential in it masked like the config's. */
export function describePolicyIdentity(server: CompiledServer): string {
  const { command, args, url } = server.identity;
  const identity: ConfiguredServer = {
    origin: 'config',
    name: server.name,
    file: '',
    fileKind: 'mcp_json',
    position: { line: 1, column: 1 },
    locate: () => ({ line: 1, column: 1 }),
    type: undefined,
    command,
    args: [...args],
    url,
    env: {},
    headers: {},
    shellAt: undefined,
  };
  return describeIdentity(redactServer(identity, findSecrets(identity)));
}
