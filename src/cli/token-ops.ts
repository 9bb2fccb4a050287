import type { Config } from '../config.js';
import { isUuid } from '../ids.js';
import { CliFailure, call, controlPlaneLine, resolveTokenId } from './kill.js';
import { printable, printableJson } from './printable.js';

// `killswitch revoke | resume`: the other break-glass steps of docs/runbook-incident.md (revoke an agent
// token; lift a halt of a session or a token) from a terminal, through the admin API exactly as
// `killswitch kill` (KILLSWITCH_URL, KILLSWITCH_OPERATOR_KEY, the client certificate, the 15 s bound, the
// same messages). `--token` takes what `kill --token` takes (an id or a display prefix, never the token).
// Loaded only when one of them runs (src/cli/main.ts).

type Out = { write(s: string): unknown };

export interface RevokeOptions {
  token: string;
  reason: string;
  json?: boolean;
}

export interface ResumeOptions {
  session?: string;
  token?: string;
  reason: string;
  json?: boolean;
}

interface RevokedToken {
  id: string;
  display_prefix: string;
  project_id: string;
  revoked_at: string | null;
  revoked_by: string | null;
  revoke_reason: string | null;
  /** Whether every replica was told at once (Redis); false: the others refuse it within TOKEN_CACHE_TTL_MS. */
  announced?: boolean;
  warning?: string;
}

/** Exit code of a revocation recorded but not announced to the other replicas (Redis did not take it). */
export const REVOKE_NOT_ANNOUNCED = 3;

/** 0 when the API says every replica was told; REVOKE_NOT_ANNOUNCED otherwise (a missing `announced` included: fail closed). */
export function revokeExitCode(answer: { announced?: unknown }): 0 | typeof REVOKE_NOT_ANNOUNCED {
  return answer.announced === true ? 0 : REVOKE_NOT_ANNOUNCED;
}

interface ResumedSession {
  session: { id: string; token_id: string; project_id: string; state: string; halts?: Array<{ trigger: string; resumed_at: string | null; resumed_by: string | null; resume_reason: string | null }> };
  resumed_trigger: string;
  token_still_halted: boolean;
  message: string;
}

interface ResumedToken {
  token_id: string;
  token_halt: { trigger: string } | null;
  sessions_resumed: string[];
  message: string;
}

const isToken = (j: Record<string, unknown>) => typeof j['id'] === 'string' && typeof j['display_prefix'] === 'string' && 'revoked_at' in j;
const isResumedSession = (j: Record<string, unknown>) =>
  typeof j['session'] === 'object' && j['session'] !== null && typeof (j['session'] as { id?: unknown }).id === 'string' && typeof j['message'] === 'string' && typeof j['token_still_halted'] === 'boolean';
const isResumedToken = (j: Record<string, unknown>) => typeof j['token_id'] === 'string' && Array.isArray(j['sessions_resumed']) && typeof j['message'] === 'string';

/** `killswitch revoke --token <id or display prefix> --reason`: POST /v1/keys/:id/revoke. */
export async function revoke(cfg: Config, o: RevokeOptions, out: Out, err: Out = process.stderr): Promise<number> {
  const id = await resolveTokenId(cfg, o.token, 'revoke');
  const res = (await call(cfg, 'POST', `v1/keys/${encodeURIComponent(id)}/revoke`, { reason: o.reason }, isToken)) as RevokedToken;
  // Fail closed: a 200 that does not show the token revoked is not taken for a revocation.
  if (typeof res.revoked_at !== 'string' || res.id !== id) {
    throw new CliFailure(`the control plane answered POST /v1/keys/${id}/revoke without showing that token revoked: check it with \`GET /v1/keys/${id}\` before treating it as revoked`, 1);
  }
  const code = revokeExitCode(res);
  if (code === REVOKE_NOT_ANNOUNCED) {
    err.write(
      `killswitch: token ${printable(res.id)} is revoked and audited, but NOT ANNOUNCED to the other replicas (exit ${REVOKE_NOT_ANNOUNCED}): ` +
        `${printable(res.warning ?? 'the answer does not say that every replica was told.')} Revoking again announces it again; until then, calls through other replicas may still be allowed.\n`,
    );
  }
  if (o.json) {
    out.write(`${printableJson(res)}\n`);
    return code;
  }
  // A token revoked before keeps its first revocation (who, when, why): the API answers 200 with it.
  const refused = code === 0 ? 'every call with it is refused (401)' : 'this replica refuses it; the others when their cache entry expires';
  out.write(
    `${printable(`Revoked agent token ${res.display_prefix}… (${res.id}, project ${res.project_id}): ${refused}.`)}\n` +
      `${printable(`Revoked by ${res.revoked_by ?? '?'} at ${res.revoked_at}: ${res.revoke_reason ?? ''}`)}\n${controlPlaneLine(cfg)}\n`,
  );
  return code;
}

/** Exactly one of --session / --token (exit 2 before any request). */
export function resumeTarget(o: ResumeOptions): { session: string } | { token: string } {
  if ((o.session === undefined) === (o.token === undefined)) {
    throw new CliFailure('name exactly one to resume: --session <session id> (a halted session) or --token <token id or display prefix> (a halted token and its halted sessions)', 2);
  }
  if (o.session !== undefined) {
    const s = o.session.trim();
    if (!isUuid(s)) {
      throw new CliFailure(
        `--session ${printable(o.session)} is not a session id (a UUID): \`killswitch status\` lists the halted sessions, and the admin UI's Sessions page shows the ids`,
        2,
      );
    }
    return { session: s };
  }
  return { token: o.token! };
}

/** `killswitch resume --session <id> | --token <id or display prefix> --reason`: POST /v1/sessions/:id/resume or /v1/keys/:id/resume. */
export async function resume(cfg: Config, o: ResumeOptions, out: Out, err: Out): Promise<number> {
  const target = resumeTarget(o);
  if ('session' in target) {
    const res = (await call(cfg, 'POST', `v1/sessions/${encodeURIComponent(target.session)}/resume`, { reason: o.reason }, isResumedSession)) as ResumedSession;
    if (res.session.id !== target.session) {
      throw new CliFailure(`the control plane answered POST /v1/sessions/${target.session}/resume about another session: check it with \`GET /v1/sessions/${target.session}\``, 1);
    }
    if (o.json) out.write(`${printableJson(res)}\n`);
    else {
      const s = res.session;
      const last = (s.halts ?? []).filter((h) => h.resumed_at !== null).sort((a, b) => (b.resumed_at ?? '').localeCompare(a.resumed_at ?? ''))[0];
      const by = last ? ` by ${last.resumed_by ?? '?'} at ${last.resumed_at}` : '';
      out.write(
        `${printable(res.message)}\n${printable(`Session ${s.id} (token ${s.token_id}, project ${s.project_id}) resumed${by} from ${res.resumed_trigger || '?'}; state ${s.state}${res.token_still_halted ? ' (its token is halted)' : ''}.`)}\n${controlPlaneLine(cfg)}\n`,
      );
    }
    if (res.token_still_halted) {
      err.write(`killswitch: its token is still halted: its calls are refused until it is resumed too: killswitch resume --token ${printable(res.session.token_id)} --reason "..."\n`);
    }
    return 0;
  }
  const id = await resolveTokenId(cfg, target.token, 'resume');
  const res = (await call(cfg, 'POST', `v1/keys/${encodeURIComponent(id)}/resume`, { reason: o.reason }, isResumedToken)) as ResumedToken;
  if (res.token_id !== id) {
    throw new CliFailure(`the control plane answered POST /v1/keys/${id}/resume about another token: check it with \`killswitch status\``, 1);
  }
  if (o.json) out.write(`${printableJson(res)}\n`);
  else {
    const sessions = res.sessions_resumed.length ? `: ${res.sessions_resumed.join(', ')}` : '';
    out.write(`${printable(res.message)}\n${printable(`Token ${res.token_id}: ${res.sessions_resumed.length} session(s) resumed${sessions}.`)}\n${controlPlaneLine(cfg)}\n`);
  }
  return 0;
}
