import { execFile } from 'node:child_process';
import { describe, expect, it } from 'vitest';

// A crash of the control plane or the gateway: one JSON line a log pipeline can read, and otherwise what
// Node does anyway (its stack on stderr, exit code 1). Run in a child process: the crash is real.

function crash(how: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const script = `import { pino } from 'pino'; import { logCrashes, loggerOptions } from './src/log.ts';
logCrashes(pino(loggerOptions('info')));
setTimeout(() => { ${how} }, 0);`;
  return new Promise((resolve) => {
    execFile(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? null) : 0, stdout, stderr });
    });
  });
}

const lines = (stdout: string) =>
  stdout
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as Record<string, unknown>);

describe('a crash is logged as one fatal JSON line', () => {
  it('an exception nobody caught: the fatal line with the error and its stack, then exit 1 as before', async () => {
    const { code, stdout, stderr } = await crash("throw new Error('boom in a timer')");
    expect(code).toBe(1);
    expect(lines(stdout)).toEqual([
      expect.objectContaining({ level: 60, origin: 'uncaughtException', msg: 'crashed: an exception nobody caught', err: expect.objectContaining({ message: 'boom in a timer', stack: expect.stringContaining('Error: boom in a timer') }) }),
    ]);
    expect(stderr).toContain('boom in a timer');
  });

  it('a promise rejection nobody handled: the same, with origin unhandledRejection', async () => {
    const { code, stdout } = await crash("void Promise.reject(new Error('nobody waited for this'))");
    expect(code).toBe(1);
    expect(lines(stdout)).toEqual([expect.objectContaining({ level: 60, origin: 'unhandledRejection', msg: 'crashed: a promise rejection nobody handled', err: expect.objectContaining({ message: 'nobody waited for this' }) })]);
  });
});
