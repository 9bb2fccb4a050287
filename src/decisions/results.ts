import { hash } from 'node:crypto';
import type { CredentialEnded } from '../audit/rows.js';
import { AppError } from '../errors.js';
import type { DecisionMeta } from '../limits/gate.js';
import { joinSentences } from '../sentences.js';
import type { AgentPrincipal, GatewayPrincipal } from '../tokens/authenticator.js';
import type { DecisionAnswer, ResultBody } from './schemas.js';
import type { HaltTrigger } from './types.js';

export interface AfterCallRules {
  /** Results larger than this need permission (policy role or an operator grant). */
  largeResultBytes: number;
  largeResultsAllowed: boolean;
  maxRows?: number | undefined;
  maxExecutionSeconds?: number | undefined;
  /** Triggers that halt the token (every session of it), not only the session: the policy's halt_token_on. */
  haltTokenOn?: ReadonlySet<HaltTrigger> | undefined;
}

export interface ResultPorts {
  decisionMeta(decisionId: string): Promise<DecisionMeta | undefined>;
  /** Claims the decision's one RESULT with `record`; returns the record of an earlier report instead, if any. */
  claimResult(decisionId: string, record: string): Promise<string | undefined>;
  /** Gives back a claim whose report failed half-way, so its retry is carried out (best effort). */
  releaseResult(decisionId: string): Promise<void>;
  rulesFor(agent: AgentPrincipal, meta: DecisionMeta): AfterCallRules;
  halt(p: { agent: AgentPrincipal; sessionId: string; trigger: HaltTrigger; summary: Record<string, unknown> }): Promise<DecisionAnswer['session']>;
  /**
   * Whether a large-results grant covered the call when it was allowed (`at`, the allow's time), though it
   * may have ended since. Asked only for a large result the policy and the grants in force do not allow.
   */
  largeResultsGrantedAt?(agent: AgentPrincipal, meta: DecisionMeta): Promise<boolean>;
  recordResult(p: { decisionId: string; agent: AgentPrincipal; gateway: GatewayPrincipal; meta: DecisionMeta; result: ResultBody; trigger?: HaltTrigger; credentialEnded?: CredentialEnded }): void;
}

export type ResultAnswer = {
  decision_id: string;
  recorded: boolean;
  /** True when this report repeats one already recorded for the decision: the answer is that report's. */
  repeated?: boolean;
  action: 'none' | 'withhold_and_halt';
  trigger?: string;
  message: string;
  session?: NonNullable<DecisionAnswer['session']>;
};

/**
 * Which after-call trigger of seed 001 a result fires, if any. Pure. The message is what the agent
 * reads (the gateway shows it): what happened to the result and what is halted. What the gateway must
 * do is `action`, not the message.
 */
export function afterCallTrigger(rules: AfterCallRules, r: ResultBody, where: { tokenId: string; sessionId: string }): { trigger: HaltTrigger; message: string } | undefined {
  const fired = (trigger: HaltTrigger, what: string) => {
    const halted = rules.haltTokenOn?.has(trigger)
      ? `This token is now halted (${trigger}): every session of it, new ones included, is stopped until an operator resumes it: POST /v1/keys/${where.tokenId}/resume.`
      : `Session ${where.sessionId} is now halted (${trigger}) until an operator resumes it: POST /v1/sessions/${where.sessionId}/resume.`;
    return { trigger, message: joinSentences(what, halted) };
  };
  if (r.result_bytes > rules.largeResultBytes && !rules.largeResultsAllowed) {
    return fired('LARGE_RESULT', `The result is ${r.result_bytes} bytes, over the ${rules.largeResultBytes}-byte limit for results without permission, so it was withheld.`);
  }
  if (rules.maxRows !== undefined && r.rows !== undefined && r.rows > rules.maxRows) {
    return fired('MAX_ROWS', `The result has ${r.rows} rows, over the limit of ${rules.maxRows}, so it was withheld.`);
  }
  if (rules.maxExecutionSeconds !== undefined && r.duration_ms > rules.maxExecutionSeconds * 1000) {
    return fired('MAX_EXECUTION_TIME', `The call ran ${r.duration_ms} ms, over the limit of ${rules.maxExecutionSeconds} s, so its result was withheld.`);
  }
  return undefined;
}

const redisUnavailable = () =>
  new AppError('SERVICE_UNAVAILABLE', 'Redis (where the decision is kept until its result) is unavailable, so the result was not recorded; withhold the result and retry shortly.');

const noDecision = (decisionId: string) =>
  new AppError(
    'NOT_FOUND',
    `No allowed decision ${decisionId} of this agent token is waiting for a result: a denial takes none, and neither does an unknown id, another token's decision, or an allow older than DECISION_META_TTL_S or made before Redis lost its state. Nothing was recorded; withhold the result.`,
  );

/** POST /v1/decisions/:id/result: the RESULT half of the audit pair and the after-call triggers. */
export class ResultService {
  constructor(private readonly ports: ResultPorts) {}

  /**
   * `credentialEnded`: the agent token was revoked or expired after the call was allowed (the route found
   * it by its hash). Its result is recorded all the same, marked so, and its after-call triggers apply.
   */
  async record(gateway: GatewayPrincipal, agent: AgentPrincipal, decisionId: string, result: ResultBody, credentialEnded?: CredentialEnded): Promise<ResultAnswer> {
    let meta: DecisionMeta | undefined;
    try {
      meta = await this.ports.decisionMeta(decisionId);
    } catch {
      throw redisUnavailable();
    }
    // Unknown, expired, or another token's decision: nothing to record against. One answer for all of
    // them (another token's decision must look like an unknown one), saying what a gateway should do.
    if (!meta || meta.tokenId !== agent.id) throw noDecision(decisionId);
    let rules = this.ports.rulesFor(agent, meta);
    if (result.result_bytes > rules.largeResultBytes && !rules.largeResultsAllowed && this.ports.largeResultsGrantedAt) {
      // A grant in force when the call was allowed covers its result, even if it ended while the call ran.
      // Postgres unavailable: judged by the grants in force now (the result is withheld and halts).
      if (await this.ports.largeResultsGrantedAt(agent, meta).catch(() => false)) rules = { ...rules, largeResultsAllowed: true };
    }
    const fired = afterCallTrigger(rules, result, { tokenId: agent.id, sessionId: meta.sessionId });
    const first: ResultAnswer = fired
      ? { decision_id: decisionId, recorded: true, action: 'withhold_and_halt', trigger: fired.trigger, message: fired.message }
      : { decision_id: decisionId, recorded: true, action: 'none', message: 'result recorded' };
    // One RESULT per decision: a gateway retrying after a timeout gets the first answer again, and nothing
    // is recorded or halted twice; a different result for the same decision is refused.
    const report = reportKey(result);
    let earlier: string | undefined;
    try {
      earlier = await this.ports.claimResult(decisionId, JSON.stringify({ report, answer: first }));
    } catch {
      throw redisUnavailable();
    }
    if (earlier !== undefined) return repeatOf(decisionId, report, earlier);
    try {
      this.ports.recordResult({ decisionId, agent, gateway, meta, result, ...(fired ? { trigger: fired.trigger } : {}), ...(credentialEnded ? { credentialEnded } : {}) });
      if (!fired) return first;
      const session = await this.ports.halt({ agent, sessionId: meta.sessionId, trigger: fired.trigger, summary: { decision_id: decisionId, server: meta.server, tool: meta.tool, ...result } });
      const answer: ResultAnswer = { ...first };
      if (session) answer.session = session;
      return answer;
    } catch (err) {
      // The halt did not happen: a retry of this report must carry it out, not be answered as a repeat.
      await this.ports.releaseResult(decisionId).catch(() => {});
      throw err;
    }
  }
}

/** What identifies a report: the fields that decide its outcome and its RESULT row. */
function reportKey(r: ResultBody): string {
  // A digest: the report is kept in Redis until the decision expires, and its error and summary are the
  // gateway's text, unredacted (the RESULT row holds them masked).
  return hash('sha256', JSON.stringify([r.status, r.duration_ms, r.result_bytes, r.rows ?? null, r.error ?? null, r.summary ?? null]), 'base64url');
}

function repeatOf(decisionId: string, report: string, earlier: string): ResultAnswer {
  let stored: { report?: string; answer?: ResultAnswer } = {};
  try {
    stored = JSON.parse(earlier) as typeof stored;
  } catch {
    // An unreadable record still means a result was recorded: refuse below.
  }
  if (stored.report !== report || !stored.answer) {
    throw new AppError('CONFLICT', `A different result was already recorded for decision ${decisionId}; a decision takes one result. Report each call's result once (a retry must send the same body).`);
  }
  return { ...stored.answer, repeated: true, message: `${stored.answer.message} (a repeat of the result already recorded: nothing recorded again)` };
}
