// autocannon in a process of its own (see open-loop.ts's header: a load generator sharing the benchmark
// process's large heap pauses for its collections, and those pauses count against the server).
//
//   node --import tsx scripts/bench/closed-loop.ts '<json autocannon options>'   (used by closedLoopInChild)

import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import autocannon from 'autocannon';

export interface ClosedLoopResult {
  total: number;
  average: number;
  p50: number;
  p99: number;
  errors: number;
}

/** Runs autocannon with `options` in a child process and resolves with its summary. */
export function closedLoopInChild(options: autocannon.Options): Promise<ClosedLoopResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), JSON.stringify(options)], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout!.setEncoding('utf8').on('data', (d: string) => {
      out += d;
    });
    child.once('exit', (code) => {
      if (code !== 0) return reject(new Error(`closed-loop generator exited with ${code}`));
      try {
        resolve(JSON.parse(out) as ClosedLoopResult);
      } catch (err) {
        reject(err as Error);
      }
    });
  });
}

if (process.argv[1] === fileURLToPath(import.meta.url) && process.argv[2]) {
  const result = await autocannon(JSON.parse(process.argv[2]) as autocannon.Options);
  const summary: ClosedLoopResult = { total: result.requests.total, average: result.requests.average, p50: result.latency.p50, p99: result.latency.p99, errors: result.errors + result.non2xx };
  process.stdout.write(JSON.stringify(summary), () => process.exit(0));
}
