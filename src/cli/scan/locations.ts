import { basename, dirname, join, posix, win32 } from 'node:path';
import type { FileKind } from './schema.js';

// Where MCP client configurations live, and which kind a found file is. Claude Desktop keeps one
// config per user in an OS-specific folder; Cursor has a user-level ~/.cursor/mcp.json; projects
// carry .cursor/mcp.json, .vscode/mcp.json, .mcp.json or mcp.json.

export interface UserLocationOptions {
  platform: NodeJS.Platform;
  home: string;
  /** %APPDATA% on Windows; empty: <home>\AppData\Roaming. */
  appData: string;
}

export interface Location {
  path: string;
  kind: FileKind;
}

/** The user-level client configs of this machine (they may not exist). */
export function userConfigLocations(o: UserLocationOptions): Location[] {
  const path = o.platform === 'win32' ? win32 : posix;
  let claude: string;
  if (o.platform === 'darwin') claude = path.join(o.home, 'Library', 'Application Support', 'Claude', 'claude_desktop_config.json');
  else if (o.platform === 'win32') claude = path.join(o.appData || path.join(o.home, 'AppData', 'Roaming'), 'Claude', 'claude_desktop_config.json');
  else claude = path.join(o.home, '.config', 'Claude', 'claude_desktop_config.json');
  return [
    { path: claude, kind: 'claude_desktop' },
    { path: path.join(o.home, '.cursor', 'mcp.json'), kind: 'cursor' },
  ];
}

/** Client configs a project directory may carry directly (what env-gate reads without --config). */
export function projectConfigLocations(dir: string): Location[] {
  return [
    { path: join(dir, '.mcp.json'), kind: 'mcp_json' },
    { path: join(dir, 'mcp.json'), kind: 'mcp_json' },
    { path: join(dir, '.cursor', 'mcp.json'), kind: 'cursor' },
    { path: join(dir, '.vscode', 'mcp.json'), kind: 'vscode' },
  ];
}

/** The kind of a file by its name and parent folder; undefined when it is not one we read. */
export function fileKindOf(file: string): FileKind | undefined {
  const name = basename(file);
  if (name === 'claude_desktop_config.json') return 'claude_desktop';
  if (name === 'package.json') return 'package_json';
  if (name === '.mcp.json') return 'mcp_json';
  if (name === 'mcp.json') {
    const parent = basename(dirname(file));
    if (parent === '.cursor') return 'cursor';
    if (parent === '.vscode') return 'vscode';
    return 'mcp_json';
  }
  return undefined;
}

/** Folders never walked into: dependencies, VCS data and caches hold no client configs of their own. */
export const SKIPPED_DIRECTORIES: ReadonlySet<string> = new Set([
  'node_modules',
  '.git',
  '.hg',
  '.svn',
  '.venv',
  'venv',
  '__pycache__',
  '.tox',
  '.cache',
  '.npm',
  '.pnpm-store',
  '.yarn',
  '.cargo',
  '.rustup',
  '.next',
  '.nuxt',
]);
