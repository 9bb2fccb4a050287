import { execFile } from 'node:child_process';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { resolve } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

/** Makes `app` listen on a free loopback port and returns its URL, for a CLI run's KILLSWITCH_URL. */
export async function listenUrl(app: { listen(o: { host: string; port: number }): Promise<unknown>; server: { address(): unknown } }): Promise<string> {
  await app.listen({ host: '127.0.0.1', port: 0 });
  return `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
}

export interface CliResult {
  /** The exit code (0 when it succeeded). */
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs `killswitch <args>` (bin/killswitch.js of this checkout) as a child process with the test's
 * environment plus `env`; resolves with its exit code and output whatever the code.
 */
export async function killswitch(args: string[], opts: { env?: Record<string, string>; cwd?: string; timeoutMs?: number } = {}): Promise<CliResult> {
  try {
    const { stdout, stderr } = await run('node', [resolve('bin/killswitch.js'), ...args], {
      env: { ...process.env, ...opts.env },
      timeout: opts.timeoutMs ?? 30_000,
      ...(opts.cwd ? { cwd: opts.cwd } : {}),
    });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

/**
 * A KILLSWITCH_URL that only counts what reaches it (answering 500): a CLI usage error must send nothing.
 * `received` is read after the runs; `close` ends it.
 */
export async function countingServer(): Promise<{ url: string; readonly received: number; close(): Promise<void> }> {
  let received = 0;
  const server = createServer((_req, res) => {
    received++;
    res.writeHead(500, { 'content-type': 'text/plain' }).end('no');
  });
  await new Promise<void>((done) => server.listen(0, '127.0.0.1', done));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    get received() {
      return received;
    },
    async close() {
      server.closeAllConnections();
      await new Promise((done) => server.close(done));
    },
  };
}
