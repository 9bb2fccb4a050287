import type { CallContext, ResolvedCall } from '../../src/decisions/types.js';

/**
 * A call as the flag step sees it after policy resolution, for tests that run that step alone (an rw
 * development token of role code_agent): which flags it needs depends only on `call`.
 */
function flagCall(call: Pick<ResolvedCall, 'server' | 'serverClass' | 'tool' | 'requiredScope' | 'capability' | 'resourceIds'>): CallContext {
  return {
    decisionId: 'd',
    receivedAt: Date.now(),
    gateway: { kind: 'gateway', id: 'gw', name: 'gw', expiresAt: null },
    agent: { kind: 'agent', id: 'tok', tokenType: 'rw', scopes: [], role: 'code_agent', projectId: 'p', environment: 'development', displayPrefix: 'mcp_rw_x', expiresAt: null },
    input: { server: call.server, tool: call.tool, arguments: {}, session_id: 's' },
    ip: '127.0.0.1',
    call: { ...call, scopeSource: 'map', extraFlags: [], networkIdentities: [] },
    flagsEvaluated: [],
    limits: {},
    warnings: [],
    dryRun: false,
    trace: [],
  };
}

/** filesystem/write_file: needs mcp.filesystem.write among others. */
export const filesystemWrite = (): CallContext =>
  flagCall({ server: 'filesystem', serverClass: 'storage', tool: 'write_file', requiredScope: 'storage:write', capability: 'write', resourceIds: ['filesystem:a'] });

/** memory/read_graph: needs mcp.memory.read among others. */
export const memoryRead = (): CallContext =>
  flagCall({ server: 'memory', serverClass: 'memory', tool: 'read_graph', requiredScope: 'memory:read', capability: 'read', resourceIds: ['memory:graph'] });
