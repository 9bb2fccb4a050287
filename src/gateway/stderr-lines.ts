import type { Readable } from 'node:stream';

// An upstream's stderr, read as lines for the gateway's debug log, with bounded memory. readline keeps a
// line until its newline: an upstream that wrote ~512 MB without one crashed the gateway (RangeError:
// Invalid string length) and took every agent's connection with it. Here a line keeps its first
// STDERR_LINE_MAX_BYTES; the rest is counted, not kept.

/** The most of one stderr line the gateway keeps (and logs). */
export const STDERR_LINE_MAX_BYTES = 8 * 1024;

/** Splits chunks into lines, each cut to `maxBytes` (a cut line ends with how many bytes were cut). */
export class BoundedLines {
  private kept: Buffer[] = [];
  private keptBytes = 0;
  private cutBytes = 0;

  constructor(
    private readonly onLine: (line: string) => void,
    private readonly maxBytes = STDERR_LINE_MAX_BYTES,
  ) {}

  push(chunk: Buffer): void {
    let from = 0;
    for (let nl = chunk.indexOf(0x0a, from); nl !== -1; nl = chunk.indexOf(0x0a, from)) {
      this.take(chunk.subarray(from, nl));
      this.flush();
      from = nl + 1;
    }
    this.take(chunk.subarray(from));
  }

  /** The last line, when the stream ends without a newline. */
  end(): void {
    if (this.keptBytes > 0 || this.cutBytes > 0) this.flush();
  }

  private take(part: Buffer): void {
    const room = this.maxBytes - this.keptBytes;
    if (part.length <= room) {
      if (part.length > 0) this.kept.push(Buffer.from(part));
      this.keptBytes += part.length;
      return;
    }
    if (room > 0) this.kept.push(Buffer.from(part.subarray(0, room)));
    this.keptBytes += Math.max(room, 0);
    this.cutBytes += part.length - Math.max(room, 0);
  }

  private flush(): void {
    const text = Buffer.concat(this.kept).toString('utf8').replace(/\r$/, '');
    const line = this.cutBytes > 0 ? `${text}… (${this.cutBytes} more bytes of this line not kept)` : text;
    this.kept = [];
    this.keptBytes = 0;
    this.cutBytes = 0;
    this.onLine(line);
  }
}

/**
 * Reads `stream` to its end (a pipe nobody drains would stop the upstream once full) and hands each
 * line, cut to STDERR_LINE_MAX_BYTES, to `onLine` when `wanted()` says it is logged at all.
 */
export function readStderrLines(stream: Readable, wanted: () => boolean, onLine: (line: string) => void): void {
  const lines = new BoundedLines(onLine);
  stream.on('data', (chunk: Buffer | string) => {
    if (wanted()) lines.push(typeof chunk === 'string' ? Buffer.from(chunk) : chunk);
  });
  stream.on('end', () => lines.end());
  stream.on('error', () => {});
}
