import { describe, expect, it } from 'vitest';
import { conditions } from '../../src/db/where.js';

// Every listing store builds its WHERE clause with this: a wrong $n sends a value to the wrong column.

describe('conditions', () => {
  it('without conditions there is no WHERE and no value', () => {
    const c = conditions();
    expect(c.where()).toBe('');
    expect(c.args).toEqual([]);
  });

  it('numbers values in the order they are added and ANDs the conditions', () => {
    const c = conditions();
    c.add('token_id = ?', 't1');
    c.list.push('revoked_at IS NULL');
    c.add('project_id = ANY(?::text[])', ['a', 'b']);
    expect(c.where()).toBe('WHERE token_id = $1 AND revoked_at IS NULL AND project_id = ANY($2::text[])');
    expect(c.args).toEqual(['t1', ['a', 'b']]);
  });

  it('replaces every ? of a fragment with the one placeholder of its value', () => {
    const c = conditions();
    c.add('x = ?', 1);
    c.add('(a = ? OR b = ?)', 'v');
    expect(c.list).toEqual(['x = $1', '(a = $2 OR b = $2)']);
    expect(c.args).toEqual([1, 'v']);
  });

  it('continues the numbering after values already there, in the same array', () => {
    const args: unknown[] = ['from', 'to'];
    const c = conditions(args);
    c.add('server = ?', 's');
    expect(c.where()).toBe('WHERE server = $3');
    expect(c.args).toBe(args);
    expect(args).toEqual(['from', 'to', 's']);
  });

  it('arg appends a value after the conditions and returns its placeholder (a LIMIT, a cursor)', () => {
    const c = conditions();
    c.add('kind = ?', 'k');
    c.list.push(`(ts, id) < (${c.arg('2026-01-01')}, ${c.arg('id-1')}::uuid)`);
    const sql = `SELECT 1 FROM t ${c.where()} LIMIT ${c.arg(50)}`;
    expect(sql).toBe('SELECT 1 FROM t WHERE kind = $1 AND (ts, id) < ($2, $3::uuid) LIMIT $4');
    expect(c.args).toEqual(['k', '2026-01-01', 'id-1', 50]);
  });

  it('two sets of conditions sharing args number one after the other', () => {
    const raw = conditions();
    raw.add('a = ?', 1);
    const rolled = conditions(raw.args);
    rolled.add('b = ?', 2);
    expect([raw.where(), rolled.where()]).toEqual(['WHERE a = $1', 'WHERE b = $2']);
    expect(raw.args).toEqual([1, 2]);
  });
});
