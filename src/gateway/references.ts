import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { isAbsolute, resolve } from 'node:path';

// `${env:NAME}` and `${file:/path}` in gateway config values, so the file that names upstream servers
// never has to hold their secrets in clear (seed 002: "servers storing credentials in plain text").

const REFERENCE = /\$\{(env|file):([^}]*)\}/g;
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

export class ConfigReferenceError extends Error {
  constructor(
    readonly where: string,
    message: string,
  ) {
    super(`${where}: ${message}`);
    this.name = 'ConfigReferenceError';
  }
}

export interface ReferenceSources {
  env: Readonly<Record<string, string | undefined>>;
  /** Relative `${file:...}` paths resolve against this directory (the config file's). */
  baseDir: string;
}

export function hasReference(value: string): boolean {
  REFERENCE.lastIndex = 0;
  return REFERENCE.test(value);
}

export function expandHome(path: string): string {
  if (path === '~') return homedir();
  if (path.startsWith('~/')) return `${homedir()}${path.slice(1)}`;
  return path;
}

/**
 * Replaces every reference in `value`. A missing variable or unreadable file is an error naming `where`,
 * never an empty string: an upstream started with a blank credential fails in confusing ways.
 */
export function resolveReferences(value: string, where: string, src: ReferenceSources): string {
  return value.replace(REFERENCE, (_all, kind: string, arg: string) => {
    if (kind === 'env') {
      if (!ENV_NAME.test(arg)) throw new ConfigReferenceError(where, `\${env:${arg}} is not a valid environment variable name`);
      const v = src.env[arg];
      if (v === undefined || v === '') throw new ConfigReferenceError(where, `environment variable ${arg} is not set (referenced as \${env:${arg}})`);
      return v;
    }
    const expanded = expandHome(arg.trim());
    if (!expanded) throw new ConfigReferenceError(where, `\${file:} needs a path, e.g. \${file:/run/secrets/github-token}`);
    const path = isAbsolute(expanded) ? expanded : resolve(src.baseDir, expanded);
    try {
      // Secret files conventionally end with a newline that is not part of the secret.
      return readFileSync(path, 'utf8').replace(/\r?\n$/, '');
    } catch (err) {
      throw new ConfigReferenceError(where, `cannot read ${path} (referenced as \${file:${arg}}): ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
  });
}
