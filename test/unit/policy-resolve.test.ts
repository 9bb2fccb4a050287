import { beforeAll, describe, expect, it } from 'vitest';
import type { DecisionInput, ResolvedCall } from '../../src/decisions/types.js';
import { type CompiledPolicy, loadPolicyFile, matchProductionPattern, parsePolicy, requiresApproval, resolveCall } from '../../src/policy/index.js';
import { UNREADABLE_HOST, upstreamIdentitiesOf } from '../../src/policy/resources.js';

let policy: CompiledPolicy;

beforeAll(async () => {
  const result = await loadPolicyFile('test/fixtures/policy/test.yaml');
  if (!result.ok) throw new Error('fixture policy invalid');
  policy = result.policy;
});

function input(server: string, tool: string, extra: Partial<DecisionInput> = {}): DecisionInput {
  return { server, tool, arguments: {}, session_id: 's-1', ...extra };
}

function resolved(i: DecisionInput): ResolvedCall {
  const r = resolveCall(policy, i);
  if (!('call' in r)) throw new Error(`denied: ${r.denial.message}`);
  return r.call;
}

describe('resolveCall: server and scope', () => {
  it('a server not in the policy is UNKNOWN_SERVER and fires UNAUTHORIZED_SERVER', () => {
    const r = resolveCall(policy, input('shel', 'run'));
    expect(r).toEqual({ denial: expect.objectContaining({ code: 'UNKNOWN_SERVER', halt: 'UNAUTHORIZED_SERVER' }) });
    if ('denial' in r) expect(r.denial.message).toContain('"shel"');
  });

  it('the map decides first, whatever the annotations say', () => {
    const call = resolved(input('filesystem', 'write_file', { annotations: { readOnlyHint: true } }));
    expect(call).toMatchObject({ server: 'filesystem', serverClass: 'storage', requiredScope: 'storage:write', capability: 'write', scopeSource: 'map' });
    expect(resolved(input('memory', 'delete_entities'))).toMatchObject({ requiredScope: 'storage:delete', capability: 'delete', scopeSource: 'map' });
    expect(resolved(input('postgres', 'query'))).toMatchObject({ requiredScope: 'db:select', capability: 'read' });
  });

  it("the policy's own tools override and extend the shipped map", () => {
    expect(resolved(input('postgres', 'execute'))).toMatchObject({ requiredScope: 'db:update', capability: 'write', scopeSource: 'map' });
    expect(resolved(input('idp', 'create_user'))).toMatchObject({ requiredScope: 'auth:*', capability: 'write' });
  });

  it('trusted annotations: read-only hint → read scope, anything else → write scope, never delete', () => {
    expect(resolved(input('trusted', 'peek', { annotations: { readOnlyHint: true } }))).toMatchObject({ requiredScope: 'storage:read', capability: 'read', scopeSource: 'annotation' });
    expect(resolved(input('trusted', 'poke', { annotations: { readOnlyHint: false } }))).toMatchObject({ requiredScope: 'storage:write', scopeSource: 'annotation' });
    expect(resolved(input('trusted', 'wipe', { annotations: { destructiveHint: true } }))).toMatchObject({ requiredScope: 'storage:write', capability: 'write' });
    // The map still decides delete scopes on a trusted server.
    expect(resolved(input('trusted', 'purge', { annotations: { readOnlyHint: true } }))).toMatchObject({ requiredScope: 'storage:delete', scopeSource: 'map' });
  });

  it('a trusted server without annotations, or an untrusted one, needs the write scope', () => {
    expect(resolved(input('trusted', 'peek'))).toMatchObject({ requiredScope: 'storage:write', scopeSource: 'untrusted-default' });
    expect(resolved(input('untrusted', 'peek', { annotations: { readOnlyHint: true } }))).toMatchObject({ requiredScope: 'storage:write', scopeSource: 'untrusted-default' });
    expect(resolved(input('github', 'delete_repository', { annotations: { readOnlyHint: true } }))).toMatchObject({ requiredScope: 'vcs:write', capability: 'write' });
  });

  it("an unmapped tool's name never makes it a read: only the map, a trusted annotation or the two MCP protocol reads do", () => {
    // Names that read like reads (the shipped maps use such names) are writes on an untrusted server.
    for (const tool of ['read_file', 'read_graph', 'get_issue', 'list_tables', 'readOnly', 'resources/list', 'Resources/Read', 'resources/read ']) {
      expect(resolved(input('untrusted', tool)), tool).toMatchObject({ requiredScope: 'storage:write', capability: 'write', scopeSource: 'untrusted-default' });
    }
  });

  it('classes without a write scope in the token table fail closed for unmapped tools', () => {
    expect(resolved(input('web', 'post_form'))).toMatchObject({ requiredScope: 'net:write', capability: 'write' });
    expect(resolved(input('runner', 'ls', { annotations: { readOnlyHint: true } }))).toMatchObject({ requiredScope: 'exec:run', capability: 'write' });
  });

  it('extra flags come from the server for that capability', () => {
    expect(resolved(input('github', 'get_issue')).extraFlags).toEqual(['mcp.github.api']);
    expect(resolved(input('postgres', 'query')).extraFlags).toEqual([]);
    expect(resolved(input('postgres', 'execute')).extraFlags).toEqual(['mcp.database.write']);
  });

  it('approval-required tools are looked up per server', () => {
    expect(requiresApproval(policy, 'filesystem', 'move_file')).toBe(true);
    expect(requiresApproval(policy, 'filesystem', 'write_file')).toBe(false);
    expect(requiresApproval(policy, 'nope', 'move_file')).toBe(false);
  });
});

describe('resolveCall: contradictory annotations', () => {
  it('a read-only hint contradicted by a destructive one is the write scope (fail closed), never delete', () => {
    const both = { annotations: { readOnlyHint: true, destructiveHint: true } };
    expect(resolved(input('trusted', 'sweep', both))).toMatchObject({ requiredScope: 'storage:write', capability: 'write', scopeSource: 'annotation' });
    // destructiveHint: false changes nothing, and a mapped delete stays a delete.
    expect(resolved(input('trusted', 'sweep', { annotations: { readOnlyHint: true, destructiveHint: false } }))).toMatchObject({ requiredScope: 'storage:read' });
    expect(resolved(input('trusted', 'purge', both))).toMatchObject({ requiredScope: 'storage:delete', scopeSource: 'map' });
  });
});

describe('resolveCall: unmapped user-management tools need auth:*', () => {
  const readOnly = { annotations: { readOnlyHint: true } };

  it.each([
    'delete_user',
    'reset_user_password',
    'create_users',
    'add-member',
    'update_role',
    'grant_permission',
    'revoke_permissions',
    'assign_roles',
    'remove_group_membership',
    'disable_account',
    'invite_collaborator',
    'rotate_credentials',
    'create_api_key',
    'regenerate_access_token',
    'reset_mfa',
    'enable_2fa',
    'impersonate_user',
    'set_privileges',
  ])('%s on a trusted server, with a read-only hint → auth:*', (tool) => {
    expect(resolved(input('trusted', tool, readOnly))).toMatchObject({ requiredScope: 'auth:*', capability: 'write', scopeSource: 'user-management-name' });
  });

  it.each(['deleteUser', 'resetUserPassword', 'createAPIKey', 'enable2FA', 'banUsers', 'users.delete'])('camelCase and dotted names: %s → auth:*', (tool) => {
    expect(resolved(input('trusted', tool, readOnly))).toMatchObject({ requiredScope: 'auth:*', scopeSource: 'user-management-name' });
  });

  it('on an untrusted server, or without annotations, too (not only the write scope)', () => {
    expect(resolved(input('untrusted', 'delete_user', readOnly))).toMatchObject({ requiredScope: 'auth:*', scopeSource: 'user-management-name' });
    expect(resolved(input('trusted', 'reset_user_password'))).toMatchObject({ requiredScope: 'auth:*', scopeSource: 'user-management-name' });
  });

  it('reads of users and names without a user or credential noun are unaffected', () => {
    expect(resolved(input('trusted', 'get_user', readOnly))).toMatchObject({ requiredScope: 'storage:read', scopeSource: 'annotation' });
    expect(resolved(input('trusted', 'list_users', readOnly))).toMatchObject({ requiredScope: 'storage:read', scopeSource: 'annotation' });
    expect(resolved(input('trusted', 'getUserRoles', readOnly))).toMatchObject({ requiredScope: 'storage:read', scopeSource: 'annotation' });
    expect(resolved(input('trusted', 'delete_file', readOnly))).toMatchObject({ requiredScope: 'storage:read', scopeSource: 'annotation' });
    expect(resolved(input('untrusted', 'set_keyboard_layout'))).toMatchObject({ requiredScope: 'storage:write', scopeSource: 'untrusted-default' });
    expect(resolved(input('github', 'delete_repository', readOnly))).toMatchObject({ requiredScope: 'vcs:write' });
  });

  it('a map entry always wins: a false positive is fixed by mapping the tool', () => {
    const parsed = parsePolicy(
      'servers:\n  crm:\n    identity: { command: ./crm }\n    class: storage\n    trust_annotations: true\n    tools: { update_user_note: "storage:write", delete_user: "storage:delete" }\nroles: {}\n',
      'inline.yaml',
    );
    if (!parsed.ok) throw new Error('inline policy invalid');
    const r = (tool: string) => resolveCall(parsed.policy, input('crm', tool, readOnly));
    expect(r('update_user_note')).toMatchObject({ call: { requiredScope: 'storage:write', scopeSource: 'map' } });
    expect(r('delete_user')).toMatchObject({ call: { requiredScope: 'storage:delete', capability: 'delete', scopeSource: 'map' } });
    expect(r('update_user_profile')).toMatchObject({ call: { requiredScope: 'auth:*', scopeSource: 'user-management-name' } });
    // The fixture's mapped create_user keeps its map source.
    expect(resolved(input('idp', 'create_user'))).toMatchObject({ requiredScope: 'auth:*', scopeSource: 'map' });
  });
});

describe('resolveCall: resource ids', () => {
  it('uses the resources field first, without credentials or query', () => {
    const call = resolved(
      input('filesystem', 'write_file', {
        arguments: { path: 'ignored.md' },
        resources: ['file:///repo/docs/./a.md', 'postgres://user:pw@DB.internal:5432/app?sslmode=require'],
      }),
    );
    expect(call.resourceIds).toEqual(['file:///repo/docs/a.md', 'postgres://db.internal:5432/app']);
  });

  it('falls back to normalised paths, urls and tables from the arguments', () => {
    expect(resolved(input('filesystem', 'write_file', { arguments: { path: 'docs//x/../a.md' } })).resourceIds).toEqual(['filesystem:docs/a.md']);
    expect(resolved(input('filesystem', 'read_multiple_files', { arguments: { paths: ['a', 'b', 'a'] } })).resourceIds).toEqual(['filesystem:a', 'filesystem:b']);
    expect(resolved(input('filesystem', 'move_file', { arguments: { source: 'a', destination: 'b/' } })).resourceIds).toEqual(['filesystem:a', 'filesystem:b']);
    expect(resolved(input('web', 'fetch', { arguments: { url: 'https://Example.com/a?token=x' } })).resourceIds).toEqual(['https://example.com/a']);
    expect(resolved(input('postgres', 'query', { arguments: { table: 'users' } })).resourceIds).toEqual(['postgres:users']);
  });

  it('a URL whose host is too long to read is one id, whichever host it names (read under the host budget)', () => {
    const urls = Array.from({ length: 20 }, (_, i) => `https://${'\ufdfa'.repeat(4_000)}${i}/x`);
    expect(resolved(input('filesystem', 'read_multiple_files', { arguments: { paths: urls } })).resourceIds).toEqual([`https://${UNREADABLE_HOST}`]);
    // Beside the owner and repository of GitHub-style tools too; a string longer than an id is not one.
    const github = input('github', 'get_file_contents', { arguments: { owner: 'o', repo: 'r', path: `https://${'\ufdfa'.repeat(85_000)}/x` } });
    expect(resolved(github).resourceIds).toEqual(['github:o/r']);
  });

  it('ids are storable: NUL and unpaired surrogates become U+FFFD, ordinary ids are unchanged', () => {
    expect(resolved(input('filesystem', 'write_file', { arguments: { path: '/tmp/demo/a\u0000' } })).resourceIds).toEqual(['filesystem:/tmp/demo/a\uFFFD']);
    expect(resolved(input('filesystem', 'write_file', { arguments: { path: 'a\ud800b' } })).resourceIds).toEqual(['filesystem:a\uFFFDb']);
    expect(resolved(input('filesystem', 'write_file', { arguments: { path: 'x', content: 'y' }, resources: ['file:///tmp/a\u0000b', 'https://example.com/\udc00'] })).resourceIds).toEqual([
      'file:///tmp/a\uFFFDb',
      'https://example.com/%EF%BF%BD',
    ]);
    expect(resolved(input('github', 'create_issue', { arguments: { owner: 'o\u0000', repo: 'r', title: 'x' } })).resourceIds).toEqual(['github:o\uFFFD/r']);
    // A pair (an emoji) is not touched, nor are ordinary ids.
    expect(resolved(input('filesystem', 'write_file', { arguments: { path: 'notes/\u{1F600}.md' } })).resourceIds).toEqual(['filesystem:notes/\u{1F600}.md']);
  });

  it('owner/repo name the repository of GitHub-style tools', () => {
    expect(resolved(input('github', 'create_or_update_file', { arguments: { owner: 'O', repo: 'R', path: '/docs/a.md' } })).resourceIds).toEqual(['github:o/r/docs/a.md']);
    expect(resolved(input('github', 'create_issue', { arguments: { owner: 'o', repo: 'r', title: 'x' } })).resourceIds).toEqual(['github:o/r']);
  });

  it('a call naming no resource counts as one resource per server', () => {
    expect(resolved(input('memory', 'create_entities', { arguments: { entities: [{ name: 'a' }] } })).resourceIds).toEqual(['memory:*']);
    expect(resolved(input('memory', 'add_observations', { arguments: {} })).resourceIds).toEqual(['memory:*']);
  });
});

describe('resolveCall: network identities', () => {
  it('hosts of web URLs under url, uri, source and destination count without resources', () => {
    for (const key of ['url', 'uri', 'source', 'destination']) {
      expect(resolved(input('filesystem', 'read_file', { arguments: { [key]: 'https://prod.example.com/x' } })).networkIdentities, key).toEqual(['prod.example.com']);
    }
  });

  it("includes the server's own host and the host and database of its connection string", () => {
    expect(resolved(input('github', 'get_issue')).networkIdentities).toEqual(['api.github.com']);
    expect(resolved(input('postgres', 'query')).networkIdentities).toEqual(['localhost', 'dev_db']);
    expect(resolved(input('filesystem', 'read_file')).networkIdentities).toEqual([]);
  });

  it('adds hosts and database names of connection strings in resources and arguments', () => {
    expect(resolved(input('filesystem', 'read_file', { resources: ['postgres://prod-db.internal/app'] })).networkIdentities).toEqual(['prod-db.internal', 'app']);
    expect(resolved(input('filesystem', 'read_file', { arguments: { conn: { dsn: 'mysql://u:p@live-db:3306/shop' } } })).networkIdentities).toEqual(['live-db', 'shop']);
    expect(resolved(input('filesystem', 'read_file', { arguments: { url: 'mongodb://a:1,b:2/orders' } })).networkIdentities).toEqual(['a', 'b', 'orders']);
    expect(resolved(input('filesystem', 'read_file', { arguments: { x: 'redis://cache.internal:6379/2' } })).networkIdentities).toEqual(['cache.internal']);
    expect(resolved(input('filesystem', 'read_file', { arguments: { x: 'jdbc:postgresql://db.prod.corp/app' } })).networkIdentities).toEqual(['db.prod.corp', 'app']);
  });

  it('adds hosts of http(s) resources, or of url arguments when there are no resources', () => {
    expect(resolved(input('web', 'fetch', { resources: ['https://github.com/o/r/blob/main/x'] })).networkIdentities).toEqual(['mcp.example.com', 'github.com']);
    expect(resolved(input('web', 'fetch', { arguments: { url: 'https://live.example.com/page' } })).networkIdentities).toEqual(['mcp.example.com', 'live.example.com']);
  });

  it('never counts file: resources, local paths, URL paths, other argument URLs or free text', () => {
    const call = resolved(
      input('filesystem', 'write_file', {
        arguments: {
          path: '/repo/main/a.md',
          base: 'main',
          content: 'deploy to postgres://prod-db/app tomorrow',
          link: 'https://prod.example.com/x',
        },
        resources: ['file:///repo/main/a.md'],
      }),
    );
    expect(call.networkIdentities).toEqual([]);
  });
});

describe('resolveCall: production hosts are read as the connecting client reads them', () => {
  const patterns = new Set(['prod', 'production', 'live', 'main']);
  const hit = (i: DecisionInput) => matchProductionPattern(resolved(i).networkIdentities, patterns);
  const fetchUrl = (url: string) => input('web', 'fetch', { arguments: { url } });
  const conn = (args: Record<string, unknown>) => input('filesystem', 'read_file', { arguments: args });

  it('a backslash ends the authority as fetch reads it: https://prod.example.com\\@evil.com is prod.example.com', () => {
    const url = 'https://prod.example.com\\@evil.com/x';
    expect(hit(fetchUrl(url))).toEqual({ identity: 'prod.example.com', pattern: 'prod' });
    expect(hit(input('web', 'fetch', { resources: [url] }))).toEqual({ identity: 'prod.example.com', pattern: 'prod' });
    // Clients that do not end the authority at `\` read evil.com: both count.
    expect(resolved(fetchUrl(url)).networkIdentities).toEqual(['mcp.example.com', 'prod.example.com', 'evil.com']);
  });

  it.each([
    ['%2e for the dot', 'https://prod%2eexample.com/'],
    ['%6f for a letter', 'https://pr%6fd.example.com/'],
    ['fullwidth letters', 'https://ｐｒｏｄ.example.com/'],
    ['no slashes', 'https:prod.example.com/x'],
    ['backslashes for slashes', 'https:\\\\prod.example.com/x'],
    ['a tab in the scheme', 'ht\ttps://prod.example.com/x'],
  ])('an http host written with %s is decoded as new URL decodes it', (_, url) => {
    expect(hit(fetchUrl(url))).toEqual({ identity: 'prod.example.com', pattern: 'prod' });
  });

  it('a URL new URL rejects but written like one counts every host-like part (fail closed)', () => {
    expect(hit(fetchUrl('https://prod.example.com:99999/'))).toMatchObject({ pattern: 'prod' });
    expect(hit(fetchUrl('https://prod%252eexample.com/'))).toMatchObject({ pattern: 'prod' });
  });

  it('connection strings are read however deep and however many strings come first', () => {
    const deep = { a: { b: { c: { d: { e: 'postgres://prod-db.internal/app' } } } } };
    expect(hit(conn(deep))).toEqual({ identity: 'prod-db.internal', pattern: 'prod' });
    const filler = Array.from({ length: 250 }, (_, i) => `note ${i}`);
    expect(hit(conn({ notes: filler, dsn: 'postgres://prod-db.internal/app' }))).toEqual({ identity: 'prod-db.internal', pattern: 'prod' });
    expect(hit(conn({ dsn: `postgres://prod-db.internal/app?application_name=${'x'.repeat(5000)}` }))).toMatchObject({ pattern: 'prod' });
  });

  it('a connection string host has its %-escapes decoded', () => {
    expect(resolved(conn({ dsn: 'postgres://u:p%40ss@pr%6fd-db.internal:5432/app' })).networkIdentities).toEqual(['prod-db.internal', 'app']);
  });

  it("libpq's own reading counts too: an `@` after `?` ends the user info", () => {
    expect(hit(conn({ dsn: 'postgres://evil?@prod-db/app' }))).toEqual({ identity: 'prod-db', pattern: 'prod' });
  });

  it('libpq: host and dbname in the query string, and key/value DSNs', () => {
    expect(resolved(conn({ dsn: 'postgresql:///app?host=prod-db' })).networkIdentities).toEqual(['prod-db', 'app']);
    expect(resolved(conn({ dsn: 'postgresql://localhost/app?dbname=main' })).networkIdentities).toEqual(['localhost', 'app', 'main']);
    expect(resolved(conn({ dsn: 'host=prod-db dbname=app' })).networkIdentities).toEqual(['prod-db', 'app']);
    expect(hit(conn({ dsn: "host = 'live.db' port=5432 dbname='my app' sslmode=require" }))).toEqual({ identity: 'live.db', pattern: 'live' });
    expect(hit(conn({ dsn: 'host=db.internal,prod-db hostaddr=10.0.0.1 dbname=app' }))).toEqual({ identity: 'prod-db', pattern: 'prod' });
  });

  it('semicolon connection strings (ADO.NET, ODBC, Npgsql, MySQL): server and database', () => {
    expect(resolved(conn({ dsn: 'Server=prod-sql;Database=app;User Id=u;Password=p' })).networkIdentities).toEqual(['prod-sql', 'app']);
    expect(hit(conn({ dsn: 'Data Source=tcp:live-sql.database.windows.net,1433;Initial Catalog=app;Encrypt=True' }))).toEqual({ identity: 'live-sql.database.windows.net', pattern: 'live' });
    expect(hit(conn({ dsn: 'Driver={ODBC Driver 18 for SQL Server};Server={prod-sql\\SQLEXPRESS};Database=app;' }))).toEqual({ identity: 'prod-sql', pattern: 'prod' });
    expect(hit(conn({ dsn: 'Host=db.internal,production-db:5432;Database=app;Username=u' }))).toEqual({ identity: 'production-db', pattern: 'production' });
    expect(hit(conn({ dsn: "server = 'dev-db' ; database = 'main' ; port = 3306" }))).toEqual({ identity: 'main', pattern: 'main' });
    expect(hit(conn({ dsn: 'Data Source=(DESCRIPTION=(ADDRESS=(PROTOCOL=TCP)(HOST=prod-ora)(PORT=1521)));User Id=u' }))).toMatchObject({ pattern: 'prod' });
    // Not a connection string: free text with a semicolon, or one part that is no key=value pair.
    expect(resolved(conn({ note: 'server=prod is down; see the status page', sql: "update t set server='prod'; commit" })).networkIdentities).toEqual([]);
    expect(resolved(conn({ dsn: 'Server=dev-sql,1433;Database=app' })).networkIdentities).toEqual(['dev-sql', 'app']);
    expect(hit(conn({ dsn: 'Server=prod-sql' }))).toEqual({ identity: 'prod-sql', pattern: 'prod' });
    expect(resolved(conn({ note: 'Server=prod is down' })).networkIdentities).toEqual([]);
  });

  it('JDBC URLs of every driver: SQL Server properties, Oracle, Sybase, any subprotocol with //', () => {
    expect(resolved(conn({ url: 'jdbc:sqlserver://sql01:1433;databaseName=production;encrypt=true' })).networkIdentities).toEqual(['sql01', 'production']);
    expect(hit(conn({ url: 'jdbc:sqlserver://;serverName=prod-sql;databaseName=app' }))).toEqual({ identity: 'prod-sql', pattern: 'prod' });
    expect(hit(conn({ url: 'jdbc:jtds:sqlserver://sql01:1433/live;instance=A' }))).toEqual({ identity: 'live', pattern: 'live' });
    expect(hit(conn({ url: 'jdbc:oracle:thin:@//prod-ora:1521/app' }))).toEqual({ identity: 'prod-ora', pattern: 'prod' });
    expect(resolved(conn({ url: 'jdbc:oracle:thin:scott/tiger@ora01:1521:live' })).networkIdentities).toEqual(['ora01', 'live']);
    expect(hit(conn({ url: 'jdbc:oracle:thin:@(DESCRIPTION=(ADDRESS=(PROTOCOL=TCP)(HOST=ora01)(PORT=1521))(CONNECT_DATA=(SERVICE_NAME=production)))' }))).toEqual({
      identity: 'production',
      pattern: 'production',
    });
    expect(hit(conn({ url: 'jdbc:db2://db2.prod.corp:50000/app' }))).toEqual({ identity: 'db2.prod.corp', pattern: 'prod' });
    expect(hit(conn({ url: 'jdbc:sybase:Tds:syb01:5000/main' }))).toEqual({ identity: 'main', pattern: 'main' });
    expect(hit(conn({ url: 'jdbc:h2:tcp://live-h2/~/app' }))).toMatchObject({ pattern: 'live' });
    // Other drivers' query keys for the database (go-mssqldb's `?database=`).
    expect(hit(conn({ url: 'sqlserver://sa@sql01?database=production' }))).toEqual({ identity: 'production', pattern: 'production' });
    // An assignment whose whole value is one: an environment entry, a command-line option.
    expect(hit(conn({ env: ['PATH=/usr/bin', 'DATABASE_URL=postgres://u:p@prod-db.internal/app'] }))).toEqual({ identity: 'prod-db.internal', pattern: 'prod' });
    expect(hit(conn({ argv: ['migrate', '--db-url=jdbc:sqlserver://sql01;databaseName=live'] }))).toEqual({ identity: 'live', pattern: 'live' });
    // A host or database alone as an assignment, read as the argument of that name.
    expect(hit(conn({ env: ['PGHOST=prod-db.internal', 'PGDATABASE=app'] }))).toEqual({ identity: 'prod-db.internal', pattern: 'prod' });
    expect(hit(conn({ argv: ['psql', '--host=db1', '--dbname=production'] }))).toEqual({ identity: 'production', pattern: 'production' });
    expect(resolved(conn({ argv: ['--branch=main', '--server=main', '--host=/var/run/postgresql'], note: 'host=prod is down' })).networkIdentities).toEqual([]);
    // The content of an env file written in development is free text; a value split across lines is not.
    expect(resolved(conn({ content: 'DATABASE_URL=postgres://prod-db/app\n# production settings\n\nexport REDIS_URL=redis://live-cache:6379\n' })).networkIdentities).toEqual([]);
    expect(hit(conn({ env: ['DATABASE_URL=postgres://pr\nod-db.internal/app'] }))).toMatchObject({ pattern: 'prod' });
    // Web URLs only where a URL is expected, as without the name; free text is still not read.
    expect(resolved(conn({ env: ['STATUS_PAGE=https://prod.example.com'], note: 'see DATABASE_URL=postgres://prod-db/app in the runbook' })).networkIdentities).toEqual([]);
    // Embedded databases name no server; a `;` in a password is not a property.
    expect(resolved(conn({ a: 'jdbc:h2:mem:main', b: 'jdbc:sqlite:/srv/main.db' })).networkIdentities).toEqual([]);
    expect(resolved(conn({ url: 'postgres://u:pa;ss@dev-db/app' })).networkIdentities).toEqual(['dev-db', 'app']);
  });

  it('hosts of ssh, git and other network URLs, and of git\'s scp-like user@host:path, as git and ssh connect to them', () => {
    // Checked with `GIT_SSH_COMMAND=<a script printing its arguments> git ls-remote <value>`: each ran ssh to prod-host.
    for (const value of ['ssh://git@prod-host/repo.git', 'git+ssh://git@prod-host/repo', 'ssh://git@PR%6FD-host/repo', 'git@prod-host:repo.git', 'git@[prod-host]:repo', ' git@PROD-HOST.:repo ']) {
      expect(hit(conn({ remote: value })), value).toMatchObject({ pattern: 'prod' });
      expect(hit(input('filesystem', 'read_file', { resources: [value.trim()] })), value).toMatchObject({ pattern: 'prod' });
    }
    // MySQL's X protocol: a database server, its path the schema.
    expect(resolved(conn({ dsn: 'mysqlx://u@dev-db:33060/production' })).networkIdentities).toEqual(['dev-db', 'production']);
    // A Docker daemon, a directory, a file share, gRPC: the host counts.
    for (const value of ['tcp://prod-docker:2376', 'ldaps://ldap.prod.corp/dc=corp', 'smb://live-fs/share', 'sftp://deploy@prod-web-1/var/www', 'grpc://prod-api:443', 'mysqlx://u@prod-db:33060/app']) {
      expect(hit(conn({ env: [`X=${value}`] })), value).toMatchObject({ pattern: expect.stringMatching(/^(prod|live)$/) });
    }
    // Their path is no database, `rev:path`, `name:tag` and an image digest name no host, a sentence is free text.
    expect(
      resolved(conn({ a: 'ssh://git@github.com/o/main.git', b: 'git@github.com:o/main.git', c: 'main:README.md', d: 'app:main', e: 'app@sha256:abc', f: 'see git@prod-host:repo', g: 'smb://fs/main' }))
        .networkIdentities,
    ).toEqual(['github.com', 'sha256', 'fs']);
  });

  it('an argv running ssh: its destination, -J jump hosts and -o HostName= / ProxyJump= count, as `ssh -G` resolves them', () => {
    for (const argv of [
      ['ssh', 'deploy@prod-web-1', 'uptime'],
      ['ssh', '-p', '22', 'prod-web-1'],
      ['/usr/bin/ssh', '-lroot', '-p22', '-4v', 'PROD-web-1.'],
      ['ssh', 'dev-box', '-o', 'HostName=prod-web-1'],
      ['ssh', '-J', 'u@prod-bastion:22', 'dev-box'],
      ['ssh', '-oProxyJump=prod-bastion', 'dev-box'],
      ['ssh', '--', 'prod-web-1'],
    ]) {
      expect(hit(conn({ argv })), argv.join(' ')).toMatchObject({ pattern: 'prod' });
    }
    expect(hit(conn({ call: { command: 'ssh', args: ['deploy@prod-web-1', 'uptime'] } }))).toEqual({ identity: 'prod-web-1', pattern: 'prod' });
    // The remote command's words, option values, and a word ssh in another program's argv are not hosts.
    const quiet = { a: ['ssh', '-i', 'main.key', 'dev-box', 'cat', '/srv/main/x', 'prod'], b: ['grep', 'ssh', 'main.log'], c: { command: 'grep ssh', args: ['main.log'] }, d: ['ssh-keygen', '-f', 'main'] };
    expect(resolved(conn(quiet)).networkIdentities).toEqual(['dev-box']);
  });

  it('a network-path reference under url or uri (//prod-api/x) reaches its host whatever base URL a tool resolves it against', () => {
    // new URL('//prod-api/x', 'https://dev-api.internal/') is https://prod-api/x; WHATWG reads `\` as `/`.
    for (const value of ['//prod-api.internal/x', '\\\\prod-api\\x', '/\\prod-api/x', ' ///PR%6FD-api/x', '/\t/prod-api', '//u@prod-api:8443/x']) {
      expect(hit(input('web', 'fetch', { arguments: { url: value } })), value).toMatchObject({ pattern: 'prod' });
      expect(hit(conn({ uri: value })), value).toMatchObject({ pattern: 'prod' });
    }
    // One slash is a path; elsewhere than under url or uri, `//x` is a path too (POSIX reads it as /x).
    expect(resolved(conn({ url: '/prod-api/x', path: '//prod-api/x', note: '//prod-api/x' })).networkIdentities).toEqual([]);
  });

  it('a host and port without a scheme under url or uri (prod-db.internal:5432) is the host curl and ioredis connect to', () => {
    for (const value of ['prod-db.internal:5432', 'prod-cache:6379/0', 'PR%6FD-api:80?x', 'ｐｒｏｄ-api:443']) {
      expect(hit(input('web', 'fetch', { arguments: { url: value } })), value).toMatchObject({ pattern: 'prod' });
      expect(hit(conn({ uri: value })), value).toMatchObject({ pattern: 'prod' });
    }
    // Without a port it may be a relative reference; elsewhere `host:port` may be a file and line (main.ts:12).
    expect(resolved(conn({ url: 'main/index.html', uri: 'main.md', note: 'main.ts:12', at: 'prod-db:5432' })).networkIdentities).toEqual([]);
  });

  it('an address key (addr, address, REDIS_ADDR, serverAddress) whose value is host:port names that host; other addresses are not hosts', () => {
    for (const args of [{ addr: 'prod-cache:6379' }, { Addrs: 'dev:1,prod-cache:6379' }, { REDIS_ADDR: 'prod-cache:6379' }, { serverAddress: 'prod-api:443' }, { env: ['REDIS_ADDR=prod-cache:6379'] }, { argv: ['--addr', 'prod-cache:6379'] }]) {
      expect(hit(conn(args)), JSON.stringify(args)).toMatchObject({ pattern: 'prod' });
    }
    // No numeric port: a mail or postal address, a name.
    expect(resolved(conn({ email_address: 'ops@prod.example.com', address: '1 Main St', mac_address: 'aa:bb:cc:dd:ee:ff', addr: 'main' })).networkIdentities).toEqual([]);
  });

  it('a connection given as separate arguments: host and database keys, however deep; one word only', () => {
    expect(resolved(conn({ host: 'prod-db.internal', database: 'app', sql: 'select 1' })).networkIdentities).toEqual(['prod-db.internal', 'app']);
    expect(hit(conn({ connection: { hostname: 'live-cache:6379' } }))).toEqual({ identity: 'live-cache', pattern: 'live' });
    expect(hit(conn({ options: [{ db_host: 'db1,db-prod-2:5433' }] }))).toEqual({ identity: 'db-prod-2', pattern: 'prod' });
    expect(hit(conn({ host: 'dev-db', dbname: 'production' }))).toEqual({ identity: 'production', pattern: 'production' });
    // A Unix socket directory, free text, a port alone, other keys: nothing.
    expect(resolved(conn({ host: '/var/run/postgresql', hostname: 'prod is down', hostaddr: '5432', branch: 'main', server: 'main', database: 'the main one' })).networkIdentities).toEqual([]);
  });

  it('separate arguments: key spellings, a list of hosts, a prefix before the host; a local database file is not a server', () => {
    for (const key of ['HOST', 'dbHost', 'databaseHost', 'db-host', 'DB_HOSTNAME', 'PGHOST', 'hosts']) {
      expect(hit(conn({ [key]: 'prod-db' })), key).toEqual({ identity: 'prod-db', pattern: 'prod' });
    }
    for (const key of ['databaseName', 'DB_NAME', 'PGDATABASE']) {
      expect(hit(conn({ [key]: 'production' })), key).toEqual({ identity: 'production', pattern: 'production' });
    }
    expect(hit(conn({ hosts: ['dev-db', 'prod-db:5432'] }))).toEqual({ identity: 'prod-db', pattern: 'prod' });
    expect(hit(conn({ host: 'tcp:prod-sql,1433' }))).toEqual({ identity: 'prod-sql', pattern: 'prod' });
    expect(hit(conn({ host: 'https://prod-api.example.com:443' }))).toMatchObject({ pattern: 'prod' });
    expect(resolved(conn({ host: '[::1]:5432', database: 'main.db', dbname: 'live.sqlite3' })).networkIdentities).toEqual(['[::1]']);
  });

  it('separate arguments: a product or purpose before host or database (MYSQL_HOST, redisHost, POSTGRES_DB), as keys and as assignments', () => {
    for (const key of ['MYSQL_HOST', 'mysqlHost', 'REDIS_HOST', 'mongo-host', 'POSTGRES_HOSTNAME', 'MYSQL_HOST_NAME', 'smtpHostAddr']) {
      expect(hit(conn({ [key]: 'prod-db' })), key).toEqual({ identity: 'prod-db', pattern: 'prod' });
      expect(hit(conn({ env: [`${key}=prod-db`] })), `${key}=`).toEqual({ identity: 'prod-db', pattern: 'prod' });
    }
    for (const key of ['MYSQL_DATABASE', 'targetDatabase', 'MONGO_INITDB_DATABASE', 'POSTGRES_DB', 'mongoDb', 'MYSQL_DB_NAME']) {
      expect(hit(conn({ [key]: 'production' })), key).toEqual({ identity: 'production', pattern: 'production' });
    }
    expect(hit(conn({ argv: ['migrate', '--mysql-host=prod-db.internal'] }))).toEqual({ identity: 'prod-db.internal', pattern: 'prod' });
  });

  it('separate arguments: host and database only as whole last words of the key; lists a tool checks against are not read', () => {
    const quiet = {
      ghost: 'prod-db',
      localhost: 'prod-db',
      mysqlhost: 'prod-db',
      hostHeader: 'prod-db',
      allowedHosts: ['prod-db'],
      known_hosts: 'prod-db',
      databaseId: 'production',
      cache_db: 'main',
      MYSQL_HOST: 'prod is down',
    };
    expect(resolved(conn(quiet)).networkIdentities).toEqual([]);
    expect(resolved(conn({ host: 'localhost', REDIS_HOST: 'localhost', POSTGRES_DB: 'app_dev' })).networkIdentities).toEqual(['localhost', 'app_dev']);
  });

  it('a host or database flag and its value as two argv elements: long flags anywhere, a database client\'s short flags after its name', () => {
    expect(hit(conn({ args: ['--host', 'prod-db'] }))).toEqual({ identity: 'prod-db', pattern: 'prod' });
    expect(hit(conn({ args: ['migrate', '--dbname', 'production'] }))).toEqual({ identity: 'production', pattern: 'production' });
    expect(hit(conn({ args: ['-host', 'prod-db'] }))).toEqual({ identity: 'prod-db', pattern: 'prod' });
    expect(hit(conn({ args: ['--mysql-host', 'prod-db:3306'] }))).toEqual({ identity: 'prod-db', pattern: 'prod' });
    expect(resolved(conn({ argv: ['psql', '-h', 'prod-db.internal', '-d', 'app'] })).networkIdentities).toEqual(['prod-db.internal', 'app']);
    expect(resolved(conn({ command: '/usr/bin/psql', args: ['-h', 'dev-db', '-d', 'production'] })).networkIdentities).toEqual(['dev-db', 'production']);
    expect(resolved(conn({ command: 'mysql', args: ['-hprod-db', '-uroot', '-D', 'app'] })).networkIdentities).toEqual(['prod-db', 'app']);
    expect(hit(conn({ cmd: ['docker', 'exec', 'db', 'redis-cli', '-h', 'live-cache', 'ping'] }))).toEqual({ identity: 'live-cache', pattern: 'live' });
    expect(hit(conn({ argv: ['sqlcmd', '-S', 'tcp:prod-sql,1433', '-d', 'app'] }))).toMatchObject({ pattern: 'prod' });
  });

  it('argv: short flags of other programs (help, debug, detach, delete), flags of other names and flags without a value are not read', () => {
    const quiet = {
      a: ['-h', 'prod-db'],
      b: ['git', 'branch', '-d', 'main'],
      c: ['docker', 'run', '-d', 'myapp:prod'],
      d: ['--help'],
      e: ['--host', '--help'],
      f: ['psql', '-h'],
      g: ['--branch', 'main', '--env', 'production'],
      h: { command: 'ls', args: ['-d', 'prod'] },
      i: ['psql', '-h', 'localhost', '-d', 'app_dev'],
    };
    expect(resolved(conn(quiet)).networkIdentities).toEqual(['localhost', 'app_dev']);
  });

  it("SQLAlchemy's dialect+driver URLs and Oracle targets written as URLs are connection strings", () => {
    expect(resolved(conn({ a: 'postgresql+asyncpg://u@prod-db/app' })).networkIdentities).toEqual(['prod-db', 'app']);
    expect(hit(conn({ a: 'mysql+pymysql://u:p@dev-db/production' }))).toEqual({ identity: 'production', pattern: 'production' });
    expect(hit(conn({ a: 'jdbc:oracle:thin:@ldap://prod-ldap:389/app,cn=OracleContext,dc=x' }))).toEqual({ identity: 'prod-ldap', pattern: 'prod' });
    expect(hit(conn({ a: 'jdbc:oracle:thin:@tcps://prod-ora:2484/app' }))).toEqual({ identity: 'prod-ora', pattern: 'prod' });
    // git+ssh is no dialect: its host counts (an ssh connection), its path is no database.
    expect(resolved(conn({ a: 'sqlite+pysqlite:///main.db', b: 'git+ssh://git@github.com/o/main' })).networkIdentities).toEqual(['github.com']);
  });

  it.each([
    ['redshift://u@prod-rs.abc.us-east-1.redshift.amazonaws.com:5439/app', 'prod-rs.abc.us-east-1.redshift.amazonaws.com'],
    ['redshift+psycopg2://u@prod-rs:5439/app', 'prod-rs'],
    ['kafka://prod-kafka-1:9092,prod-kafka-2:9092', 'prod-kafka-1'],
    ['nats://u:p@prod-nats:4222', 'prod-nats'],
    ['elasticsearch://prod-es:9200', 'prod-es'],
    ['couchbases://prod-cb.example.com', 'prod-cb.example.com'],
    ['trino://u@prod-trino:8080/hive', 'prod-trino'],
    ['bigquery://prod-project/dataset', 'prod-project'],
    ['mqtts://prod-broker:8883', 'prod-broker'],
    // node-postgres reads any scheme; dj-database-url's aliases.
    ['pg://u:p@prod-db:5432/app', 'prod-db'],
    ['pgsql://prod-db/app', 'prod-db'],
    ['postgis://prod-gis/app', 'prod-gis'],
    ['mysql2://prod-db/app', 'prod-db'],
    ['cockroach://prod-crdb:26257/app', 'prod-crdb'],
  ])('the host of a %s connection string is read', (dsn, host) => {
    expect(hit(conn({ dsn }))).toEqual({ identity: host, pattern: 'prod' });
  });

  it('mongodb+srv: the cluster host is read, authSource and other query options are not hosts', () => {
    expect(resolved(conn({ dsn: 'mongodb+srv://u:p@prod-cluster.x1y2.mongodb.net/app?authSource=admin&replicaSet=live' })).networkIdentities).toEqual(['prod-cluster.x1y2.mongodb.net', 'app']);
    expect(resolved(conn({ dsn: 'mongodb+srv://u:p@dev-cluster.x1y2.mongodb.net/?authSource=production' })).networkIdentities).toEqual(['dev-cluster.x1y2.mongodb.net']);
  });

  it('a whole value that is a %-encoded connection string (once, twice) is read decoded: a client may decode it', () => {
    expect(resolved(conn({ dsn: 'postgres%3A%2F%2Fprod-db%2Fapp' })).networkIdentities).toEqual(['prod-db', 'app']);
    expect(hit(conn({ dsn: 'postgres%253A%252F%252Fu%253Ap%2540prod-db%253A5432%252Fapp' }))).toEqual({ identity: 'prod-db', pattern: 'prod' });
    expect(hit(conn({ dsn: 'jdbc%3Asqlserver%3A%2F%2Fsql01%3BdatabaseName%3Dproduction' }))).toEqual({ identity: 'production', pattern: 'production' });
    expect(hit(fetchUrl('https%3A%2F%2Fprod.example.com%2Fx'))).toEqual({ identity: 'prod.example.com', pattern: 'prod' });
  });

  it('%-encoded text is read only when it decodes to a whole connection string, and web URLs only where a URL is', () => {
    const quiet = { note: 'status%3A prod is down', q: 'next=postgres%3A%2F%2Fprod-db', link: 'https%3A%2F%2Fprod.example.com%2Fx', path: 'reports%2Fprod%2Fa.md' };
    expect(resolved(conn(quiet)).networkIdentities).toEqual([]);
    expect(resolved(conn({ dsn: 'mysql%3A%2F%2Fu%3Ap%40dev-db%3A3306%2Fapp' })).networkIdentities).toEqual(['dev-db', 'app']);
  });

  it('a gateway list at the schema maximum may have been cut: then every URL in the arguments counts', () => {
    const files = Array.from({ length: 100 }, (_, i) => `file:///repo/f${i}.md`);
    expect(hit(input('filesystem', 'write_file', { arguments: { link: 'https://prod.example.com/x' }, resources: files }))).toMatchObject({ pattern: 'prod' });
    expect(hit(input('filesystem', 'write_file', { arguments: { link: 'https://prod.example.com/x' }, resources: files.slice(0, 99) }))).toBeUndefined();
  });

  it('host text outside plain ASCII is read up to a bound in a decision; beyond it the call names UNREADABLE_HOST, which every production pattern matches', () => {
    // U+FDFA is 18 characters under NFKC: unbounded, 85,000 of them took half a second to read.
    const long = '\ufdfa'.repeat(1_000);
    for (const args of [{ host: long }, { dsn: `postgres://${long}/app` }, { dsn: `Server=${long};Database=app` }, { url: `https://${long}/x` }, { url: `https://${'\uff41'.repeat(2_000)}.example.com/x` }]) {
      expect(resolved(conn(args)).networkIdentities, JSON.stringify(args).slice(0, 60)).toContain(UNREADABLE_HOST);
      expect(hit(conn(args))).toEqual({ identity: UNREADABLE_HOST, pattern: '*' });
    }
    // Within the bound, read as before: fullwidth letters as a resolver reads them.
    const fullwidth = `\uff50\uff52\uff4f\uff44-${'\uff41'.repeat(1_000)}`;
    expect(resolved(conn({ host: fullwidth })).networkIdentities).toEqual([`prod-${'a'.repeat(1_000)}`]);
    // Plain ASCII costs nothing to normalise: read whatever its length.
    expect(hit(conn({ host: `prod-${'x'.repeat(100_000)}` }))).toMatchObject({ pattern: 'prod' });
    // In all, 16,384 normalised characters: twenty hosts of 900 fullwidth letters are read up to there.
    const hosts = Array.from({ length: 20 }, (_, i) => `${'\uff41'.repeat(899)}${i % 10}`);
    const ids = resolved(conn({ hosts })).networkIdentities;
    expect(ids).toContain(`${'a'.repeat(899)}0`);
    expect(ids).toContain(UNREADABLE_HOST);
    expect(ids.length).toBeLessThan(20);
    // Each decision starts a new budget.
    expect(resolved(conn({ host: fullwidth })).networkIdentities).not.toContain(UNREADABLE_HOST);
  });

  it('outside a decision (the policy file, the scan, a gateway report) host text is read in full', () => {
    const long = `\uff50\uff52\uff4f\uff44.${'\uff41'.repeat(20_000)}`;
    expect([...upstreamIdentitiesOf({ args: [`postgresql://${long}/app`] })]).toEqual([`prod.${'a'.repeat(20_000)}`, 'app']);
  });

  it('stays quiet for what is not a production host', () => {
    expect(resolved(conn({ dsn: 'host=/var/run/postgresql dbname=app' })).networkIdentities).toEqual(['app']);
    expect(resolved(fetchUrl('https://main:p%40ss@api.github.com/o/r/blob/main/x')).networkIdentities).toEqual(['mcp.example.com', 'api.github.com']);
    expect(resolved(conn({ sql: "select * from t where branch = 'main'", note: 'Note: main = live', text: 'host=prod is down, see https://status' })).networkIdentities).toEqual([]);
  });
});

describe('production patterns match whole segments', () => {
  const patterns = new Set(['prod', 'production', 'live', 'main']);
  it.each([
    ['prod-db.internal', 'prod'],
    ['db.production.example.com', 'production'],
    ['production-like.internal', 'production'],
    ['live_cache', 'live'],
    ['app_main', 'main'],
  ])('%s matches %s', (identity, pattern) => {
    expect(matchProductionPattern([identity], patterns)).toEqual({ identity, pattern });
  });

  it.each(['mainframe.corp', 'products.internal', 'deliver.example.com', 'localhost', 'dev_db', 'github.com'])('%s does not match', (identity) => {
    expect(matchProductionPattern([identity], patterns)).toBeUndefined();
  });
});

describe('MCP protocol reads', () => {
  it('resources/read and prompts/get are reads of the server, whatever the annotations or the trust', async () => {
    const { parsePolicy } = await import('../../src/policy/index.js');
    const { resolveCall } = await import('../../src/policy/index.js');
    const parsed = parsePolicy('servers:\n  memory:\n    identity: { command: npx }\n    map: memory\nroles: {}\n', 'inline.yaml');
    if (!parsed.ok) throw new Error(JSON.stringify(parsed.issues));
    for (const tool of ['resources/read', 'prompts/get']) {
      const r = resolveCall(parsed.policy, { server: 'memory', tool, arguments: {}, session_id: 's', annotations: { readOnlyHint: false } });
      if (!('call' in r)) throw new Error('expected a call');
      expect(r.call.requiredScope).toBe('storage:read');
      expect(r.call.capability).toBe('read');
      expect(r.call.scopeSource).toBe('protocol');
    }
  });
});
