import { homedir } from 'node:os';
import { describe, expect, it } from 'vitest';
import { canonicalLocation, resolvePath, resourceOfUri, resourcesOf } from '../../src/gateway/resources.js';
import { callIdentitiesOf, matchProductionPattern, resourceIdsOf, UNREADABLE_HOST } from '../../src/policy/resources.js';

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

  it('a path keeps surrounding spaces: server-filesystem writes `c`, `c ` and `c\u00a0` as three files, so they are three resources', () => {
    const variants = ['c', 'c ', 'c\u00a0', 'c\t', 'c\u2003', 'c\ufeff', ' c'];
    const gateway = variants.map((p) => resourcesOf('filesystem', { path: `/srv/allowed/${p}` }, allowed, cwd)[0]);
    expect(new Set(gateway).size).toBe(variants.length);
    expect(gateway[1]).toBe('file:///srv/allowed/c%20');
    expect(resolvePath('c ', allowed, cwd)).toBe('/srv/allowed/c ');
    // The control plane's own reading (a gateway that sent no resources) counts them apart too.
    const plane = variants.map((p) => resourceIdsOf('filesystem', { path: `/srv/allowed/${p}` }, undefined)[0]);
    expect(new Set(plane).size).toBe(variants.length);
    // A URL is still read without its surrounding spaces (as WHATWG URL parsing does).
    expect(resourcesOf('fetch', { url: ' https://example.com/a ' }, [], cwd)).toEqual(['https://example.com/a']);
    expect(resourceIdsOf('fetch', {}, [' https://example.com/a '])).toEqual(resourceIdsOf('fetch', {}, ['https://example.com/a']));
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

describe('resources name the host the upstream connects to, and the control plane matches it', () => {
  const patterns = new Set(['prod', 'production', 'live', 'main']);
  /** The production pattern the control plane finds in what the gateway sends for these arguments. */
  const hit = (args: Record<string, unknown>) => {
    const identities = new Set<string>();
    callIdentitiesOf(args, resourcesOf('fetch', args, [], cwd), identities);
    return matchProductionPattern([...identities], patterns);
  };

  it('a backslash ends the authority as fetch reads it, and the other reading is sent too', () => {
    const args = { url: 'https://prod.example.com\\@evil.com/x' };
    expect(resourcesOf('fetch', args, [], cwd)).toEqual(['https://prod.example.com/@evil.com/x', 'https://evil.com']);
    expect(hit(args)).toEqual({ identity: 'prod.example.com', pattern: 'prod' });
  });

  it.each(['https://prod%2eexample.com/', 'https://pr%6fd.example.com/', 'https://ｐｒｏｄ.example.com/', 'https:prod.example.com/'])('%s is a resource on prod.example.com', (url) => {
    expect(resourcesOf('fetch', { options: { target: url } }, [], cwd)).toEqual(['https://prod.example.com/']);
    expect(hit({ options: { target: url } })).toEqual({ identity: 'prod.example.com', pattern: 'prod' });
  });

  it('URLs are found however deep, after any number of other strings, and however long', () => {
    const deep = { a: { b: { c: { d: { e: 'https://prod.example.com/x' } } } } };
    expect(resourcesOf('fetch', deep, [], cwd)).toEqual(['https://prod.example.com/x']);
    expect(hit(deep)).toMatchObject({ pattern: 'prod' });
    const late = { notes: Array.from({ length: 250 }, (_, i) => `note ${i}`), link: 'https://live.example.com/' };
    expect(hit(late)).toEqual({ identity: 'live.example.com', pattern: 'live' });
    const long = { url: `https://prod.example.com/${'a'.repeat(5000)}` };
    const [r] = resourcesOf('fetch', long, [], cwd);
    expect(r?.length).toBe(4096);
    expect(hit(long)).toMatchObject({ pattern: 'prod' });
  });

  it('past the schema maximum of 100 resources, the control plane still sees the URL in the arguments', () => {
    const args = { paths: Array.from({ length: 120 }, (_, i) => `f${i}.md`), link: 'https://prod.example.com/' };
    expect(resourcesOf('fetch', args, allowed, cwd)).toHaveLength(100);
    const identities = new Set<string>();
    callIdentitiesOf(args, resourcesOf('fetch', args, allowed, cwd), identities);
    expect(matchProductionPattern([...identities], patterns)).toMatchObject({ pattern: 'prod' });
  });

  it('libpq hosts in the query string are resources too', () => {
    expect(resourcesOf('pg', { dsn: 'postgresql:///app?host=prod-db' }, [], cwd)).toEqual(['postgresql:///app', 'postgresql://prod-db']);
    expect(hit({ dsn: 'postgresql:///app?host=prod-db' })).toEqual({ identity: 'prod-db', pattern: 'prod' });
  });

  it('an authority cut into more than 64 parts (`@`, `\\`, `,`) is read to its 64th part, and names host text too long to read beyond: refused', () => {
    // Every part was read: 1 MB of `@` held the event loop 0.5 s, 1 MB of `%@` (a failed %-decoding per part) 5 s.
    const unreadable = `https://${UNREADABLE_HOST}`;
    for (const text of [`https://${'@'.repeat(100_000)}`, `https://${'%@'.repeat(100_000)}`, `postgres://h?${'@'.repeat(100_000)}`]) {
      const rs = resourcesOf('fetch', { note: text }, [], cwd);
      expect(rs.length).toBeLessThanOrEqual(3);
      expect(rs).toContain(`${text.slice(0, text.indexOf(':'))}://${UNREADABLE_HOST}`);
      expect(hit({ note: text })).toEqual({ identity: UNREADABLE_HOST, pattern: '*' });
    }
    // What lies past the 64th part (here evil.com) is not read, and the call is refused for it.
    const hidden = { note: `https://dev.example.com\\${'@\\'.repeat(100)}evil.com/` };
    expect(resourcesOf('fetch', hidden, [], cwd)).toEqual([`https://dev.example.com/${'@/'.repeat(100)}evil.com/`, unreadable]);
    expect(hit(hidden)).toEqual({ identity: UNREADABLE_HOST, pattern: '*' });
    // 64 parts are read, a part repeated once (31 users twice, the host, `x`); a 65th makes it unreadable.
    const users = Array.from({ length: 31 }, (_, i) => `u${i}@`).join('');
    const sixtyFour = { note: `https://${users}${users}dev.example.com\\x/` };
    expect(resourcesOf('fetch', sixtyFour, [], cwd)).toEqual(['https://dev.example.com/x/', ...Array.from({ length: 31 }, (_, i) => `https://u${i}`), 'https://x']);
    expect(hit(sixtyFour)).toBeUndefined();
    const sixtyFive = { note: `https://u@${users}${users}dev.example.com\\x/` };
    expect(resourcesOf('fetch', sixtyFive, [], cwd)).toContain(unreadable);
  });

  it('host text outside plain ASCII is read under the control plane\'s bound (1,024 characters in one host): beyond, too long to read', () => {
    // Unbounded, `new URL` mapped 1 MB of fullwidth letters through IDNA in ~0.3 s.
    const args = { note: `https://${'\uff41'.repeat(2_000)}.example.com/` };
    expect(resourcesOf('fetch', args, [], cwd)).toEqual([`https://${UNREADABLE_HOST}`]);
    expect(hit(args)).toEqual({ identity: UNREADABLE_HOST, pattern: '*' });
    expect(resourcesOf('fetch', { note: `https://${'\uff41'.repeat(100)}.example.com/` }, [], cwd)).toEqual([`https://${'a'.repeat(100)}.example.com/`]);
  });

  it('a connection string\'s lists are read to their 64th item, its names to 4,096 characters: beyond, too long to read', () => {
    // Every item was read: 1 MB of `,@` after `?host=` held the event loop 0.25 s, 1 MB of `&host=a` 0.14 s.
    const unreadable = `postgresql://${UNREADABLE_HOST}`;
    const hosts = (n: number) => Array.from({ length: n }, (_, i) => `h${i}`).join(',');
    const params = (n: number) => Array.from({ length: n }, (_, i) => `p${i}=1`).join('&');
    const cases = [
      `postgresql://u@${hosts(65)}/app`,
      `postgresql://h/app?host=${hosts(65)}`,
      `postgresql://h/app?${params(64)}&host=prod-db`,
      `postgresql://h/app?host=${'a'.repeat(4_097)}`,
    ];
    for (const dsn of cases) {
      expect(resourcesOf('pg', { dsn }, [], cwd)).toContain(unreadable);
      expect(hit({ dsn })).toEqual({ identity: UNREADABLE_HOST, pattern: '*' });
    }
    // A database name is no resource (the control plane reads it from the arguments).
    expect(hit({ dsn: `postgresql://h/${'a'.repeat(4_097)}` })).toEqual({ identity: UNREADABLE_HOST, pattern: '*' });
    // 64 items and 4,096 characters are read whole, and a parameter that names no host has its value unread.
    for (const dsn of [`postgresql://u@${hosts(64)}/app`, `postgresql://h/app?host=${hosts(64)}`, `postgresql://h/app?${params(63)}&host=dev-db`, `postgresql://h/${'a'.repeat(4_096)}`, `postgresql://h/app?options=${'a'.repeat(100_000)}`]) {
      expect(resourcesOf('pg', { dsn }, [], cwd)).not.toContain(unreadable);
      expect(hit({ dsn })).toBeUndefined();
    }
    expect(hit({ dsn: `postgresql://h/app?${params(63)}&host=prod-db` })).toEqual({ identity: 'prod-db', pattern: 'prod' });
    expect(hit({ dsn: `jdbc:sqlserver://h;${params(64).replaceAll('&', ';')};serverName=prod-sql` })).toEqual({ identity: UNREADABLE_HOST, pattern: '*' });
  });

  it('a call\'s first 1,000 URLs and connection strings are read; each past them is too long to read, and refused', () => {
    // 1 MB of short URLs `new URL` rejects (`https://@@@…#1`, `#2`…) held the event loop 0.4 s.
    const same = Array.from({ length: 1_000 }, (_, i) => `https://dev.example.com/?${i}`);
    expect(resourcesOf('fetch', { list: same }, [], cwd)).toEqual(['https://dev.example.com/']);
    expect(hit({ list: same })).toBeUndefined();
    const args = { list: same, link: 'https://prod.example.com/' };
    expect(resourcesOf('fetch', args, [], cwd)).toEqual(['https://dev.example.com/', `https://${UNREADABLE_HOST}`]);
    expect(hit(args)).toEqual({ identity: UNREADABLE_HOST, pattern: '*' });
    // A string repeated is read once; free text (`Note: …`) is no URL and costs nothing against the bound.
    const repeated = { list: [...Array(5_000).fill('https://dev.example.com/'), ...Array.from({ length: 5_000 }, (_, i) => `Note: ${i}`)], link: 'https://live.example.com/' };
    expect(hit(repeated)).toEqual({ identity: 'live.example.com', pattern: 'live' });
    // The control plane reads connection strings in the arguments under the same bound.
    const identities = new Set<string>();
    callIdentitiesOf({ dsns: [...Array.from({ length: 1_000 }, (_, i) => `postgresql://dev-db/app?x=${i}`), 'postgresql://prod-db/app'] }, undefined, identities);
    expect(identities).toEqual(new Set(['dev-db', 'app', UNREADABLE_HOST]));
  });

  it('a call\'s first 1,000 paths are normalised; past them each is sent as written (another spelling is another resource)', () => {
    const paths = [...Array.from({ length: 1_000 }, (_, i) => `d${i}/../c.md`), 'x/../../d.md'];
    expect(resourcesOf('filesystem', { paths }, allowed, cwd)).toEqual(['file:///srv/allowed/c.md', 'x/../../d.md']);
    expect(resourcesOf('filesystem', { paths: paths.slice(1) }, allowed, cwd)).toEqual(['file:///srv/allowed/c.md', 'file:///srv/d.md']);
  });

  it('a GitHub link to /blob/main/ and a "main" argument are still not production', () => {
    expect(hit({ url: 'https://github.com/o/r/blob/main/x', base: 'main', path: '/repo/main/a.md' })).toBeUndefined();
  });
});
