import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { BoundedLines, readStderrLines } from '../../src/gateway/stderr-lines.js';

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
