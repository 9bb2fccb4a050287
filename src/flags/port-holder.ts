import { readdir, readFile, readlink } from 'node:fs/promises';
import { createServer } from 'node:net';

// Who holds the embedded Unleash's port, for a start that finds it taken: the message names the process
// (an Unleash left by a control plane killed with SIGKILL, another installation's, anything else) instead
// of a bare "in use". Linux only (/proc); elsewhere, and for another user's process, the pid is unknown.

/** True when nothing can listen on host:port because something else does (EADDRINUSE). */
export function portTaken(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', (err: NodeJS.ErrnoException) => resolve(err.code === 'EADDRINUSE'));
    server.listen({ host, port, exclusive: true }, () => server.close(() => resolve(false)));
  });
}

export interface PortHolder {
  pid: number;
  /** Its command line, arguments joined by spaces. */
  command: string;
  ppid: number;
  /** The parent's command name (/proc/<ppid>/comm): `node` for a control plane. */
  parentName: string;
}

/** Socket inodes listening on `port` (/proc/net/tcp and tcp6, state 0A). */
async function listeningInodes(port: number): Promise<Set<string>> {
  const hex = port.toString(16).toUpperCase().padStart(4, '0');
  const inodes = new Set<string>();
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    const text = await readFile(table, 'utf8').catch(() => '');
    for (const line of text.split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f[1]?.endsWith(`:${hex}`) && f[3] === '0A' && f[9] && f[9] !== '0') inodes.add(f[9]);
    }
  }
  return inodes;
}

/** The process listening on `port`, when this machine says (Linux, a process of this user); else undefined. */
export async function portHolder(port: number): Promise<PortHolder | undefined> {
  const inodes = await listeningInodes(port);
  if (inodes.size === 0) return undefined;
  const pids = await readdir('/proc').catch(() => [] as string[]);
  for (const name of pids) {
    if (!/^\d+$/.test(name)) continue;
    const fds = await readdir(`/proc/${name}/fd`).catch(() => [] as string[]);
    for (const fd of fds) {
      const target = await readlink(`/proc/${name}/fd/${fd}`).catch(() => '');
      const m = /^socket:\[(\d+)\]$/.exec(target);
      if (!m?.[1] || !inodes.has(m[1])) continue;
      const command = (await readFile(`/proc/${name}/cmdline`, 'utf8').catch(() => '')).split('\0').filter(Boolean).join(' ');
      const stat = await readFile(`/proc/${name}/stat`, 'utf8').catch(() => '');
      // The fields after the command name (which may hold spaces), in its parentheses: state, ppid, ...
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      const parentName = (await readFile(`/proc/${ppid}/comm`, 'utf8').catch(() => '')).trim();
      return { pid: Number(name), command, ppid, parentName };
    }
  }
  return undefined;
}

/** An embedded Unleash child (its launcher) whose control plane is gone: adopted by init or a subreaper. */
export function orphanedLauncher(holder: PortHolder, launcher: string): boolean {
  return holder.command.includes(launcher) && (holder.ppid === 1 || !holder.parentName.startsWith('node'));
}
