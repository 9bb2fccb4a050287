import type { IncomingMessage } from 'node:http';

// A credential header sent more than once. Node keeps the first Authorization and drops the others (and
// joins repeated X-Agent-Token values with ", "), while a proxy in front may read another one: the two
// would then act on different credentials. Such a request is refused, never decided on either value.

/** How many times the request carries the header `lowerName` (lower case), counted in its raw headers. */
export function headerCount(req: IncomingMessage, lowerName: string): number {
  const raw = req.rawHeaders;
  let n = 0;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    if (name.length === lowerName.length && name.toLowerCase() === lowerName) n++;
  }
  return n;
}

/** The problem with a credential header sent `count` times, in words (undefined when it was sent once or never). */
export function repeatedHeaderProblem(name: string, count: number): string | undefined {
  return count > 1 ? `${name} was sent ${count} times: send it once (a proxy and this service could each read a different one)` : undefined;
}
