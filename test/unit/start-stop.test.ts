import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { describe, expect, it } from 'vitest';
import { StartStop, StartStopped } from '../../src/start-stop.js';

// The start's own signal handling (src/start-stop.ts), driven through its handler: what a first signal
// waits for, what a second one does, and that a start stopped meanwhile never hands over to the drain.

function harness(graceMs = 5_000) {
  const lines: string[] = [];
  const log = {
    info: (_: object, m: string) => void lines.push(m),
    warn: (_: object, m: string) => void lines.push(m),
    error: (_: object, m: string) => void lines.push(m),
  };
  let resolveExit: (code: number) => void = () => {};
  const exited = new Promise<number>((r) => {
    resolveExit = r;
  });
  const stop = new StartStop(log, 'the check of the configuration', (code) => resolveExit(code), graceMs);
  return { stop, lines, exited };
}

describe('StartStop', () => {
  it('the first signal names the phase, lets an uninterrupted step finish, runs the stops, then exits 130; the start cannot hand over any more', async () => {
    const { stop, lines, exited } = harness();
    stop.enter('the first owner key');
    const order: string[] = [];
    let finishKey: () => void = () => {};
    const key = stop.uninterrupted(
      () =>
        new Promise<void>((r) => {
          finishKey = () => {
            order.push('key written');
            r();
          };
        }),
    );
    stop.onStop(async () => void order.push('Unleash stopped'));
    stop.handler('SIGINT');
    expect(stop.stopping).toBe(true);
    await new Promise((r) => setTimeout(r, 50));
    expect(order).toEqual([]);
    finishKey();
    await key;
    expect(await exited).toBe(130);
    expect(order).toEqual(['key written', 'Unleash stopped']);
    expect(lines.at(-1)).toMatch(/^stopped during the first owner key \(SIGINT\)/);
    expect(() => stop.handOver()).toThrow(StartStopped);
    expect(() => stop.enter('opening the port')).toThrow(StartStopped);
  });

  it("npm's copy of a Ctrl-C is not a second signal; another signal while the stop hangs kills the registered children and exits at once (143)", async () => {
    const { stop, lines, exited } = harness(60_000);
    const child = spawn(process.execPath, ['-e', "process.on('SIGTERM', () => {}); setInterval(() => {}, 1000)"], { stdio: 'ignore' });
    await once(child, 'spawn');
    stop.child(child.pid!);
    stop.onStop(() => new Promise<void>(() => {}));
    stop.handler('SIGINT');
    stop.handler('SIGINT');
    await new Promise((r) => setTimeout(r, 30));
    expect(lines.some((l) => l.startsWith('second signal'))).toBe(false);
    stop.handler('SIGTERM');
    expect(await exited).toBe(143);
    const [, signal] = await once(child, 'exit');
    expect(signal).toBe('SIGKILL');
  });

  it('a stop that does not finish within its deadline exits anyway', async () => {
    const { stop, lines, exited } = harness(200);
    stop.onStop(() => new Promise<void>(() => {}));
    stop.handler('SIGTERM');
    expect(await exited).toBe(143);
    expect(lines.at(-1)).toMatch(/did not finish within 0.2 s/);
  });
});
