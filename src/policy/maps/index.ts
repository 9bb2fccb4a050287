import { everythingMap } from './everything.js';
import { fetchMap } from './fetch.js';
import { filesystemMap } from './filesystem.js';
import { gitMap } from './git.js';
import { githubMap } from './github.js';
import { memoryMap } from './memory.js';
import { postgresMap } from './postgres.js';
import { sqliteMap } from './sqlite.js';
import type { ToolMap } from './types.js';

export type { ToolMap };

/** Tool maps shipped for the official reference MCP servers, by the name a policy uses (`map: github`). */
export const SHIPPED_MAPS: ReadonlyMap<string, ToolMap> = new Map(
  [filesystemMap, memoryMap, everythingMap, githubMap, postgresMap, sqliteMap, fetchMap, gitMap].map((m) => [m.name, m]),
);
