import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { BoundedLines, readStderrLines, STDERR_BYTES_PER_LINE, STDERR_LINE_BURST } from '../../src/gateway/stderr-lines.js';

describe('BoundedLines (an upstream stderr read for the log)', () => {
  it('splits lines across chunks, drops a \\r before the newline, ends with an unterminated last line', () => {
    const out: string[] = [];
    const lines = new BoundedLines((l) => out.push(l), 16);
    lines.push(Buffer.from('first li'));
    lines.push(Buffer.from('ne\r\nsecond\n\nthi'));
    lines.push(Buffer.from('rd'));
    lines.end();
    expect(out).toEqual(['first line', 'second', '', 'third']);
  });

  it('keeps the first maxBytes of a long line and counts the rest, whatever the chunks', () => {
    const out: string[] = [];
    const lines = new BoundedLines((l) => out.push(l), 8);
    lines.push(Buffer.from('abcdef'));
    for (let i = 0; i < 1000; i++) lines.push(Buffer.alloc(1000, 0x79));
    lines.push(Buffer.from('zz\nnext\n'));
    expect(out).toEqual([`abcdefyy… (${1000 * 1000} more bytes of this line not kept)`, 'next']);
  });
});

describe('BoundedLines: lines logged per byte of stderr', () => {
  it('logs a burst of 1,024 lines, then one per 64 bytes; the rest of a chunk is one line saying how many bytes were not logged', () => {
    // Each line costs the event loop a microsecond or two however short: 1 MB of newlines held it 2 s.
    expect([STDERR_BYTES_PER_LINE, STDERR_LINE_BURST]).toEqual([64, 1_024]);
    const out: string[] = [];
    const lines = new BoundedLines((l) => out.push(l));
    lines.push(Buffer.from('partial '));
    for (let i = 0; i < 10; i++) lines.push(Buffer.alloc(4096, 0x0a));
    // First chunk: 1,024 lines (`partial ` ends the first), then 4,096 - 1,024 bytes unlogged; then 64 lines (4,096 / 64) per chunk.
    expect(out.length).toBe(1_024 + 1 + 9 * (64 + 1));
    expect(out[0]).toBe('partial ');
    expect(out[1_024]).toBe('… (3072 bytes of stderr not logged: more lines than the log keeps, one per 64 bytes)');
    expect(out.at(-1)).toBe('… (4032 bytes of stderr not logged: more lines than the log keeps, one per 64 bytes)');
    // Lines as long as the rate are all logged, and a line begun in a skipped chunk's tail is kept whole.
    const text: string[] = [];
    const t = new BoundedLines((l) => text.push(l));
    for (let i = 0; i < 100; i++) t.push(Buffer.from(`${'x'.repeat(62)}${String(i % 10)}\n`.repeat(100)));
    expect(text.length).toBe(10_000);
    const tail: string[] = [];
    const u = new BoundedLines((l) => tail.push(l), 8_192);
    u.push(Buffer.alloc(2_000, 0x0a));
    u.push(Buffer.from('\n'.repeat(100) + 'last li'));
    u.push(Buffer.from(`ne\n${' '.repeat(61)}`));
    expect(tail.slice(-2)).toEqual(['… (99 bytes of stderr not logged: more lines than the log keeps, one per 64 bytes)', 'last line']);
  });
});

describe('readStderrLines', () => {
  it('drains the stream also when nothing is logged (a full pipe would stop the upstream)', async () => {
    const stream = new PassThrough({ highWaterMark: 1024 });
    const out: string[] = [];
    readStderrLines(stream, () => false, (l) => out.push(l));
    let written = 0;
    for (let i = 0; i < 64; i++) {
      // write() answers false once the buffer is full; a drained stream keeps taking.
      await new Promise<void>((r) => (stream.write(Buffer.alloc(1024, 0x78)) ? r() : stream.once('drain', r)));
      written += 1024;
    }
    stream.end();
    await new Promise((r) => stream.once('end', r));
    expect(written).toBe(64 * 1024);
    expect(out).toEqual([]);
  });
});
