import { homedir } from 'node:os';
import { describe, expect, it } from 'vitest';
import { canonicalLocation, resolvePath, resourceOfUri, resourcesOf } from '../../src/gateway/resources.js';
import { resourceIdsOf } from '../../src/policy/resources.js';

const allowed = ['/srv/allowed', '/srv/other'];
const cwd = '/var/gateway';

describe('resource normalisation against the allowed directories', () => {
  it('`a.md` and `/srv/allowed/a.md` are one resource', () => {
    const a = resourcesOf('filesystem', { path: 'a.md' }, allowed, cwd);
    const b = resourcesOf('filesystem', { path: '/srv/allowed/a.md' }, allowed, cwd);
    const c = resourcesOf('filesystem', { path: '/srv/allowed/sub/../a.md' }, allowed, cwd);
    const d = resourcesOf('filesystem', { path: './a.md' }, allowed, cwd);
    expect(a).toEqual(['file:///srv/allowed/a.md']);
    expect(b).toEqual(a);
    expect(c).toEqual(a);
    expect(d).toEqual(a);
  });

  it('expands ~ like server-filesystem does', () => {
    expect(resourcesOf('filesystem', { path: '~/notes/x.md' }, allowed, cwd)).toEqual([`file://${homedir()}/notes/x.md`]);
    expect(resolvePath('~', allowed, cwd)).toBe(homedir());
  });

  it('relative paths resolve against the first allowed directory, or the upstream cwd without any', () => {
    expect(resolvePath('docs/a.md', allowed, cwd)).toBe('/srv/allowed/docs/a.md');
    expect(resolvePath('docs/a.md', [], cwd)).toBe('/var/gateway/docs/a.md');
    // Escaping with .. is still one well-defined path (the upstream refuses it; cascade counts it).
    expect(resolvePath('../outside.md', allowed, cwd)).toBe('/srv/outside.md');
  });

  it('reads paths[], source and destination', () => {
    expect(resourcesOf('filesystem', { paths: ['a.md', '/srv/allowed/b.md', 7] }, allowed, cwd)).toEqual(['file:///srv/allowed/a.md', 'file:///srv/allowed/b.md']);
    expect(resourcesOf('filesystem', { source: 'a.md', destination: 'b.md' }, allowed, cwd)).toEqual(['file:///srv/allowed/a.md', 'file:///srv/allowed/b.md']);
  });

  it('percent-encodes characters that would otherwise read as a query or fragment', () => {
    expect(resourcesOf('filesystem', { path: 'what?#.md' }, allowed, cwd)).toEqual(['file:///srv/allowed/what%3F%23.md']);
  });

  it('keeps URLs and connection strings anywhere in the arguments, without credentials or query', () => {
    const r = resourcesOf('fetch', { url: 'https://user:pw@example.com/a?token=x#f', options: { db: 'postgresql://app:pw@db.prod.internal:5432/app?sslmode=require' } }, [], cwd);
    expect(r).toEqual(['https://example.com/a', 'postgresql://db.prod.internal:5432/app']);
    expect(canonicalLocation('mongodb://u:p@a:1,b:2/db?replicaSet=x')).toBe('mongodb://a:1,b:2/db');
    // A URL under a path key is a URL, not a path.
    expect(resourcesOf('s', { source: 'https://example.com/x' }, allowed, cwd)).toEqual(['https://example.com/x']);
  });

  it('a call without a resource argument is one resource per server', () => {
    const a = resourcesOf('memory', { entities: [{ name: 'Ada', entityType: 'person', observations: ['likes tea'] }] }, [], cwd);
    const b = resourcesOf('memory', { relations: [{ from: 'Ada', to: 'Bob', relationType: 'knows' }] }, [], cwd);
    expect(a).toEqual(['mcp://memory']);
    expect(b).toEqual(a);
    expect(resourcesOf('filesystem', {}, allowed, cwd)).toEqual(['mcp://filesystem']);
  });

  it('resources/read: file URIs are normalised like paths, others kept', () => {
    expect(resourceOfUri('filesystem', 'file:///srv/allowed/x/../a.md', allowed, cwd)).toEqual(['file:///srv/allowed/a.md']);
    expect(resourceOfUri('memory', 'memory://graph', [], cwd)).toEqual(['memory://graph']);
  });

  it('the control plane keeps the gateway resources distinct per file and equal per spelling', () => {
    const one = resourceIdsOf('filesystem', { path: 'a.md' }, resourcesOf('filesystem', { path: 'a.md' }, allowed, cwd));
    const same = resourceIdsOf('filesystem', { path: '/srv/allowed/a.md' }, resourcesOf('filesystem', { path: '/srv/allowed/a.md' }, allowed, cwd));
    const other = resourceIdsOf('filesystem', { path: 'b.md' }, resourcesOf('filesystem', { path: 'b.md' }, allowed, cwd));
    expect(one).toEqual(same);
    expect(one).not.toEqual(other);
    const memA = resourceIdsOf('memory', {}, resourcesOf('memory', { entities: [] }, [], cwd));
    const memB = resourceIdsOf('memory', {}, resourcesOf('memory', { observations: [] }, [], cwd));
    expect(memA).toEqual(memB);
  });
});
