/**
 * What the Tokens page says after a revocation, from the API's answer (POST /v1/keys/:id/revoke). The
 * answer's `announced` says whether every replica was told at once; when Redis did not take the
 * announcement the others refuse the token only when their cached entry expires, and saying "every
 * replica refuses it" would be false exactly when the operator most needs to know (an outage).
 */
export function revokeNotice(displayPrefix: string, answer: { announced?: unknown; warning?: unknown } | undefined): string {
  if (answer?.announced === true) return `Token ${displayPrefix}… revoked: every replica refuses it.`;
  const why = typeof answer?.warning === 'string' ? ` ${answer.warning}` : ' The answer does not say that every replica was told.';
  return `Token ${displayPrefix}… revoked and audited, but NOT announced to the other replicas yet.${why} Revoke it again once Redis is back.`;
}
