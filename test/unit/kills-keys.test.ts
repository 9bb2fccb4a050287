import { describe, expect, it } from 'vitest';
import type { CallContext } from '../../src/decisions/types.js';
import { describeTarget, KILL_TARGETS, type KillTarget, keysAffecting, killTargetKeysFor, liftedMessage, targetKey } from '../../src/kills/keys.js';

const call = {
  agent: { id: 'tok-1', projectId: 'alpha', role: 'code_agent', environment: 'staging' },
  input: { server: 'filesystem', session_id: 'sess-1' },
  call: { server: 'filesystem', capability: 'write' },
} as unknown as CallContext;

const targets: KillTarget[] = [
  { target: 'everything' },
  { target: 'server', server: 'filesystem' },
  { target: 'capability', capability: 'write' },
  { target: 'capability', capability: 'write', server: 'filesystem' },
  { target: 'token', token_id: 'tok-1' },
  { target: 'project', project_id: 'alpha' },
  { target: 'role', role: 'code_agent' },
  { target: 'environment', environment: 'staging' },
  { target: 'session', session_id: 'sess-1' },
];

describe('kill keys', () => {
  it('a call is matched by exactly the nine targets that describe it', () => {
    const keys = killTargetKeysFor(call);
    expect(keys).toHaveLength(9);
    expect(new Set(keys).size).toBe(9);
    expect(keys.sort()).toEqual(targets.map(targetKey).sort());
    expect(new Set(targets.map((t) => t.target))).toEqual(new Set(KILL_TARGETS));
  });

  it('targets that do not describe the call are not among its keys', () => {
    const keys = new Set(killTargetKeysFor(call));
    for (const other of [
      { target: 'server', server: 'memory' },
      { target: 'capability', capability: 'read' },
      { target: 'capability', capability: 'write', server: 'memory' },
      { target: 'capability', capability: 'read', server: 'filesystem' },
      { target: 'token', token_id: 'tok-2' },
      { target: 'environment', environment: 'production' },
    ] as KillTarget[]) {
      expect(keys.has(targetKey(other)), JSON.stringify(other)).toBe(false);
    }
  });

  it('a capability kill on every server and one on a server named like a capability do not collide', () => {
    expect(targetKey({ target: 'capability', capability: 'write' })).toBe('cap:write');
    expect(targetKey({ target: 'capability', capability: 'write', server: 'read' })).toBe('cap:read:write');
    expect(targetKey({ target: 'capability', capability: 'read' })).not.toBe(targetKey({ target: 'capability', capability: 'write', server: 'read' }));
  });

  it('names targets in words and lists the kills that affect a timeline target', () => {
    expect(describeTarget({ target: 'capability', capability: 'delete', server: 'postgres' })).toBe('delete calls on server postgres');
    expect(keysAffecting({ server: 'filesystem' })).toEqual(expect.arrayContaining(['all', 'server:filesystem', 'cap:write', 'cap:filesystem:write']));
    expect(keysAffecting({ token: { id: 't', project_id: 'p', role: 'r', environment: 'development' } })).toEqual(['all', 'token:t', 'project:p', 'role:r', 'env:development']);
  });

  it('words the lift of every target as a sentence (the drill printed "calls to write calls on every server")', () => {
    expect(targets.map((t) => liftedMessage(t))).toEqual([
      'Lifted: every MCP call is decided normally again on every replica.',
      'Lifted: calls to server filesystem are decided normally again on every replica.',
      'Lifted: write calls on every server are decided normally again on every replica.',
      'Lifted: write calls on server filesystem are decided normally again on every replica.',
      'Lifted: calls made with token tok-1 are decided normally again on every replica.',
      'Lifted: calls made with the tokens of project alpha are decided normally again on every replica.',
      'Lifted: calls made with the tokens of role code_agent are decided normally again on every replica.',
      'Lifted: calls made with the tokens of environment staging are decided normally again on every replica.',
      'Lifted: calls in session sess-1 are decided normally again on every replica.',
    ]);
  });
});
