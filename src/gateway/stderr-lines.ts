import type { Readable } from 'node:stream';

// An upstream's stderr, read as lines for the gateway's debug log, with bounded memory. readline keeps a
// line until its newline: an upstream that wrote ~512 MB without one crashed the gateway (RangeError:
// Invalid string length) and took every agent's connection with it. Here a line keeps its first
// STDERR_LINE_MAX_BYTES; the rest is counted, not kept.

/** The most of one stderr line the gateway keeps (and logs). */
export const STDERR_LINE_MAX_BYTES = 8 * 1024;
/**
 * Lines logged per byte of stderr, as a budget: each chunk adds its length / STDERR_BYTES_PER_LINE lines
 * to it, up to STDERR_LINE_BURST; each line logged takes one. A line costs the event loop a microsecond or
 * two however short, so 1 MB of newlines held it 2 s at debug level; now at most one line per 64 bytes
 * (in bursts of 1,024) is logged, and the rest of a chunk past the budget is one line saying how many
 * bytes were not.
 */
export const STDERR_BYTES_PER_LINE = 64;
export const STDERR_LINE_BURST = 1_024;

/** Splits chunks into lines, each cut to `maxBytes` (a cut line ends with how many bytes were cut). */
export class BoundedLines {
  private kept: Buffer[] = [];
  private keptBytes = 0;
  private cutBytes = 0;
  private lineBudget = STDERR_LINE_BURST;

  constructor(
    private readonly onLine: (line: string) => void,
    private readonly maxBytes = STDERR_LINE_MAX_BYTES,
  ) {}

  push(chunk: Buffer): void {
    this.lineBudget = Math.min(STDERR_LINE_BURST, this.lineBudget + chunk.length / STDERR_BYTES_PER_LINE);
    let from = 0;
    for (let nl = chunk.indexOf(0x0a, from); nl !== -1; nl = chunk.indexOf(0x0a, from)) {
      if (this.lineBudget < 1) {
        // The rest of this chunk's whole lines (a line begun before it included): one line for them all.
        const last = chunk.lastIndexOf(0x0a);
        const skipped = this.keptBytes + this.cutBytes + last + 1 - from;
        this.kept = [];
        this.keptBytes = 0;
        this.cutBytes = 0;
        this.onLine(`… (${skipped} bytes of stderr not logged: more lines than the log keeps, one per ${STDERR_BYTES_PER_LINE} bytes)`);
        from = last + 1;
        break;
      }
      this.lineBudget--;
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
    const kept = this.kept.length === 0 ? '' : this.kept.length === 1 ? (this.kept[0] as Buffer).toString('utf8') : Buffer.concat(this.kept).toString('utf8');
    const text = kept.endsWith('\r') ? kept.slice(0, -1) : kept;
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
