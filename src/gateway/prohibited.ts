import { homedir } from 'node:os';
import { posix, resolve, sep } from 'node:path';
import { CREDENTIAL_PATHS_UNDER_HOME } from '../policy/sensitive-paths.js';
import { expandHome, hasReference } from './references.js';

// Seed 002's prohibited patterns, checked before any upstream is started: shell / command execution
// servers, file servers reaching `/`, `~` or sensitive directories, and credentials written in clear.
// The policy module has no function for upstream launch configs (it sees calls, not processes), so the
// gateway keeps this small check of its own; the control plane still refuses prohibited servers per call.

export interface UpstreamLaunch {
  command?: string | undefined;
  args: readonly string[];
  env: Readonly<Record<string, string>>;
  url?: string | undefined;
  headers: Readonly<Record<string, string>>;
  allowedDirectories: readonly string[];
}

export interface ProhibitedFinding {
  server: string;
  pattern: 'shell_execution' | 'filesystem_root' | 'sensitive_directory' | 'plaintext_credential';
  message: string;
}

const SHELLS: ReadonlySet<string> = new Set(['sh', 'bash', 'zsh', 'fish', 'dash', 'ksh', 'csh', 'tcsh', 'ash', 'cmd', 'cmd.exe', 'powershell', 'powershell.exe', 'pwsh', 'pwsh.exe']);
/** Package or binary names of MCP servers whose purpose is running commands. */
const SHELL_SERVER = /(^|[/@])((mcp-)?(server-)?(shell|terminal)(-mcp)?(-server)?|(mcp-server|server|mcp)-(commands?|exec|run-command)|(shell|terminal|commands?|exec)-mcp(-server)?)(@[^/]*)?$/i;
/** Launchers that run the command named in their arguments (`env bash -c …`, `busybox sh`, `sudo -u x sh`). */
const LAUNCHERS: ReadonlySet<string> = new Set(['env', 'busybox', 'sudo', 'doas', 'nohup', 'nice', 'ionice', 'timeout', 'stdbuf', 'setsid', 'chroot', 'unshare', 'xargs', 'exec', 'command', 'start', 'runas']);
/** Interpreters, and the flags that make them run code written in the config instead of a server's file. */
const INLINE_CODE: ReadonlyArray<{ bin: RegExp; flags: ReadonlySet<string> }> = [
  { bin: /^(node|nodejs|bun)(\.exe)?$/, flags: new Set(['-e', '--eval', '-p', '--print']) },
  { bin: /^deno(\.exe)?$/, flags: new Set(['eval']) },
  { bin: /^(python|pypy)[0-9.]*(\.exe)?$/, flags: new Set(['-c']) },
  { bin: /^(perl|ruby)(\.exe)?$/, flags: new Set(['-e', '-E']) },
  { bin: /^php(\.exe)?$/, flags: new Set(['-r']) },
  { bin: /^osascript$/, flags: new Set(['-e']) },
];
const SHELL_FLAG = /^--?(allow-)?shell(=(true|1|yes))?$|(^|[^A-Za-z])shell\s*=\s*(true|1|yes)$/i;

/** System directories no file server should be rooted at (exact match: scripts under /usr are fine). */
const SENSITIVE_SYSTEM = ['/etc', '/root', '/var', '/usr', '/bin', '/sbin', '/boot', '/proc', '/sys', '/dev', '/private/etc', '/private/var'];

const SECRET_NAME = /(token|secret|passw(or)?d|passwd|api[-_]?key|apikey|private[-_]?key|credential|auth|access[-_]?key|session[-_]?key|cookie|^key$|_key$)/i;
const SECRET_FLAG = /^--?[A-Za-z-]*(token|secret|password|passwd|api-?key|credential)[A-Za-z-]*(=(.+))?$/i;
const URL_WITH_PASSWORD = /^[A-Za-z][A-Za-z0-9+.-]*:\/\/[^/@\s:]*:[^/@\s]+@/;
const PATH_LIKE = /^(\/|~|\$HOME|[A-Za-z]:[\\/])/;
const DRIVE_ROOT = /^[A-Za-z]:[\\/]*$/;

function home(): string {
  return resolve(homedir());
}

/** Where a path-like argument points, or undefined when it is not a path. */
export function pathOf(arg: string): string | undefined {
  const value = arg.startsWith('$HOME') ? `~${arg.slice(5)}` : arg;
  if (!PATH_LIKE.test(value)) return undefined;
  if (DRIVE_ROOT.test(value)) return '/';
  return resolve(expandHome(value));
}

function isInside(path: string, dir: string): boolean {
  return path === dir || path.startsWith(dir.endsWith(sep) ? dir : dir + sep);
}

function directoryFindings(server: string, path: string, shown: string): ProhibitedFinding[] {
  const h = home();
  if (path === '/' || path === h) {
    return [{ server, pattern: 'filesystem_root', message: `${server}: "${shown}" gives the server the ${path === '/' ? 'filesystem root /' : 'home directory ~'}; name a project directory instead` }];
  }
  if (SENSITIVE_SYSTEM.includes(path)) {
    return [{ server, pattern: 'sensitive_directory', message: `${server}: "${shown}" is a system directory (${path}); name a project directory instead` }];
  }
  const secret = CREDENTIAL_PATHS_UNDER_HOME.map((d) => resolve(h, d)).find((d) => isInside(path, d));
  if (secret) return [{ server, pattern: 'sensitive_directory', message: `${server}: "${shown}" reaches ${secret}, which holds credentials` }];
  return [];
}

/** The program a command names, lower case; Windows paths too (`C:\\Windows\\System32\\cmd.exe` is cmd.exe). */
function programOf(command: string): string {
  return posix.basename(command.trim().replaceAll('\\', '/')).toLowerCase();
}

/** The shell an entry runs: its command, or one a launcher (`env bash -c …`) starts; else undefined. */
export function shellOf(command: string | undefined, args: readonly string[]): string | undefined {
  if (command === undefined) return undefined;
  const bin = programOf(command);
  if (SHELLS.has(bin)) return command;
  // The launched command is one of the arguments: a shell among them is a shell.
  if (LAUNCHERS.has(bin.replace(/\.exe$/, ''))) return args.find((a) => SHELLS.has(programOf(a)));
  return undefined;
}

/**
 * Why a shell-wrapped entry is refused and what to write instead. `cmd /c npx -y x` and
 * `bash -c "npx -y x"` are mostly habits from clients that could not start npx.cmd on Windows;
 * `starter` (the gateway, or a client) starts a program without any shell, so the wrapper can go.
 */
export function shellRefusal(command: string, args: readonly string[], starter: string): string {
  const shell = shellOf(command, args) ?? command;
  const at = args.indexOf(shell);
  const afterShell = at >= 0 ? args.slice(at + 1) : args;
  const flag = afterShell[0];
  const inner = flag !== undefined && /^([/-](c|k)|-command|-lc|-ic)$/i.test(flag) ? afterShell.slice(1) : [];
  const words = inner.length === 1 ? (inner[0] ?? '').trim().split(/\s+/) : inner;
  const program = words[0];
  const what = shell === command ? `is a shell` : `launches the shell "${shell}"`;
  const refused = `command "${command}" ${what}, and MCP servers that can run any command are refused`;
  if (program === undefined || program === '' || SHELLS.has(programOf(program))) return `${refused}: start the server's own program instead of a shell`;
  const wrapper = [command, ...args.slice(0, at + 1), flag].join(' ');
  const rest = words.slice(1).map((w) => JSON.stringify(w)).join(', ');
  return `${refused}: drop \`${wrapper}\`: ${starter} starts ${program} itself ("command": ${JSON.stringify(program)}, "args": [${rest}])`;
}

/**
 * Findings that stop the gateway from starting. `raw` is the entry as written (references not yet
 * resolved: a value that came from `${env:...}` is not "in clear"); `resolved` is what would be run.
 */
export function prohibitedUpstreamConfig(server: string, raw: UpstreamLaunch, resolved: UpstreamLaunch): ProhibitedFinding[] {
  const out: ProhibitedFinding[] = [];
  const checkedDirs = new Set<string>();
  const checkDirectory = (path: string, shown: string) => {
    if (checkedDirs.has(path)) return;
    checkedDirs.add(path);
    out.push(...directoryFindings(server, path, shown));
  };
  const command = resolved.command;
  if (command !== undefined) {
    const bin = programOf(command);
    const shell = shellOf(command, resolved.args);
    if (shell !== undefined) {
      out.push({ server, pattern: 'shell_execution', message: `${server}: ${shellRefusal(command, resolved.args, 'the gateway')}` });
    } else if (SHELL_SERVER.test(bin)) {
      out.push({ server, pattern: 'shell_execution', message: `${server}: command "${command}" is a command-execution server` });
    } else if (LAUNCHERS.has(bin.replace(/\.exe$/, ''))) {
      // A launcher without a shell among its arguments runs a program: nothing to refuse here.
    } else {
      const inline = INLINE_CODE.find((i) => i.bin.test(bin));
      const flag = inline && resolved.args.find((a) => inline.flags.has(a.trim()) || [...inline.flags].some((f) => f.startsWith('--') && a.trim().startsWith(`${f}=`)));
      if (flag !== undefined) out.push({ server, pattern: 'shell_execution', message: `${server}: command "${command}" runs code written in the config (${flag}) rather than a server: refused like command execution` });
    }
  }
  resolved.args.forEach((arg, i) => {
    if (SHELL_SERVER.test(arg.trim()) && !arg.startsWith('-')) {
      out.push({ server, pattern: 'shell_execution', message: `${server}: args[${i}] "${arg}" is a command-execution server` });
    } else if (SHELL_FLAG.test(arg.trim())) {
      out.push({ server, pattern: 'shell_execution', message: `${server}: args[${i}] "${arg}" enables shell execution` });
    }
    const path = pathOf(arg.trim());
    if (path !== undefined) checkDirectory(path, arg);
  });
  for (const [name, value] of Object.entries(resolved.env)) {
    if (SHELL_FLAG.test(`${name}=${value}`)) out.push({ server, pattern: 'shell_execution', message: `${server}: env ${name}=${value} enables shell execution` });
  }
  for (const dir of resolved.allowedDirectories) {
    checkDirectory(pathOf(dir) ?? resolve(dir), dir);
  }

  raw.args.forEach((arg, i) => {
    if (hasReference(arg)) return;
    if (URL_WITH_PASSWORD.test(arg)) out.push({ server, pattern: 'plaintext_credential', message: `${server}: args[${i}] holds a password in clear; use \${env:NAME} or \${file:/path}` });
    const flag = SECRET_FLAG.exec(arg);
    const next = raw.args[i + 1];
    if (flag && (flag[2] !== undefined || (next !== undefined && !next.startsWith('-') && !hasReference(next)))) {
      out.push({ server, pattern: 'plaintext_credential', message: `${server}: args[${i}] "${arg.split('=')[0]}" passes a secret in clear; use \${env:NAME} or \${file:/path}` });
    }
  });
  for (const [name, value] of Object.entries(raw.env)) {
    if (value !== '' && !hasReference(value) && (SECRET_NAME.test(name) || URL_WITH_PASSWORD.test(value))) {
      out.push({ server, pattern: 'plaintext_credential', message: `${server}: env ${name} holds a credential in clear; write "\${env:${name}}" or "\${file:/path}" instead` });
    }
  }
  for (const [name, value] of Object.entries(raw.headers)) {
    if (value !== '' && !hasReference(value) && (SECRET_NAME.test(name) || /^(bearer|basic|token)\s/i.test(value))) {
      out.push({ server, pattern: 'plaintext_credential', message: `${server}: header ${name} holds a credential in clear; use \${env:NAME} or \${file:/path}` });
    }
  }
  if (raw.url !== undefined && !hasReference(raw.url) && URL_WITH_PASSWORD.test(raw.url)) {
    out.push({ server, pattern: 'plaintext_credential', message: `${server}: url holds a password in clear; use \${env:NAME} or \${file:/path}` });
  }
  return out;
}
