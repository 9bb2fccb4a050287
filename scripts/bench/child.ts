// The small protocol of the benchmark's helper processes (open-loop.ts, disk-probe.ts): the child gets
// ready, says `ready` on stdout and waits; the parent writes one word on its stdin when the measured part
// starts (or ends), and the child answers with one line of JSON and exits.

import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';

export interface ReadyChild {
  pid: number;
  /** Writes `word` on the child's stdin, reads its one-line JSON answer, then closes its stdin. */
  ask<T>(word: string): Promise<T>;
}

/** Starts `node <nodeArgs>` and resolves once it has said `ready`. `what` names it in errors. */
export async function startReadyChild(what: string, nodeArgs: string[]): Promise<ReadyChild> {
  const child = spawn(process.execPath, nodeArgs, { stdio: ['pipe', 'pipe', 'inherit'] });
  const lines = createInterface({ input: child.stdout! })[Symbol.asyncIterator]();
  const exited = new Promise<never>((_, reject) => child.once('exit', (code) => reject(new Error(`${what} exited with ${code}`))));
  const next = async () => {
    const line = await Promise.race([lines.next(), exited]);
    if (line.done) throw new Error(`${what} closed its output`);
    return line.value;
  };
  const ready = await next();
  if (ready !== 'ready') throw new Error(`${what}: unexpected ${ready.slice(0, 200)}`);
  return {
    pid: child.pid!,
    async ask<T>(word: string) {
      child.stdin!.write(`${word}\n`);
      const answer = JSON.parse(await next()) as T;
      child.stdin!.end();
      return answer;
    },
  };
}

/** In the child: says `ready` and resolves when the parent's word arrives (or its stdin closes). */
export async function readyThenWait(): Promise<void> {
  const input = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
  process.stdout.write('ready\n');
  await input.next();
}

/** In the child: prints the answer as one line and exits once the pipe has taken all of it (it may take several writes). */
export function answerAndExit(answer: unknown): void {
  process.stdout.write(`${JSON.stringify(answer)}\n`, () => process.exit(0));
}
