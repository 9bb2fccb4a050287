import { parentPort } from 'node:worker_threads';
import { parsePolicy } from './load.js';
import type { ParseReply, ParseRequest } from './parse-thread.js';

// The policy parser's thread (parse-thread.ts starts it): YAML, schema check and compilation of a reloaded
// file, off the event loop that answers decisions. It answers each request with the result parsePolicy
// gives (the compiled policy is maps, sets, plain objects and a Date: it crosses by structured clone), or,
// when the result cannot be posted, with why: the reload then parses on the main thread.
//
// Named `*.worker.ts`: bin/bundle.js bundles every such file as an entry of its own, next to main.js.

const port = parentPort;
if (!port) throw new Error('parse.worker.ts runs as a worker thread (src/policy/parse-thread.ts starts it)');
port.on('message', (request: ParseRequest) => {
  const result = parsePolicy(Buffer.from(request.bytes.buffer, request.bytes.byteOffset, request.bytes.byteLength), request.file);
  try {
    port.postMessage({ id: request.id, result } satisfies ParseReply);
  } catch (err) {
    port.postMessage({ id: request.id, failed: `the parsed policy cannot be posted back: ${(err as Error).message}` } satisfies ParseReply);
  }
});
