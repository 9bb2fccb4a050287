import { vi } from 'vitest';

/**
 * What this process writes to stderr from now on (the embedded Unleash's output is piped there), still
 * written through. The test ends it with `vi.restoreAllMocks()`.
 */
export function captureStderr(): string[] {
  const written: string[] = [];
  const write = process.stderr.write.bind(process.stderr);
  vi.spyOn(process.stderr, 'write').mockImplementation(((chunk: string | Uint8Array, ...rest: never[]) => {
    written.push(String(chunk));
    return write(chunk, ...rest);
  }) as typeof process.stderr.write);
  return written;
}
