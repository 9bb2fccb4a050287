import { describe, expect, it } from 'vitest';
import { stoppedLine } from '../../src/server.js';

describe('the last line of a shutdown', () => {
  it('is info when every audit row reached Postgres', () => {
    expect(stoppedLine({ spoolSize: 0, lost: 0 })).toEqual({ level: 'info', msg: expect.stringMatching(/^stopped: in-flight requests finished/) });
  });

  it('is a warning (seen at LOG_LEVEL=warn) when rows wait in the spool, naming how many and that the next start replays them', () => {
    const line = stoppedLine({ spoolSize: 7, lost: 0 });
    expect(line.level).toBe('warn');
    expect(line.msg).toMatch(/^stopped: .*; 7 audit row\(s\) wait in the spool under DATA_DIR .* replayed at the next start$/);
  });

  it('is an error when rows were lost, whatever waits in the spool', () => {
    const line = stoppedLine({ spoolSize: 3, lost: 2 });
    expect(line.level).toBe('error');
    expect(line.msg).toContain('2 audit row(s) could be written neither to Postgres nor to the spool and are lost');
  });
});
