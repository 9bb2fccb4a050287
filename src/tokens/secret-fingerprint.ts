import { createHmac } from 'node:crypto';

/** Settings rows: the secret a start without TOKEN_HASH_SECRET generated, and the fingerprint of the secret in use. */
export const STORED_SECRET = 'token_hash_secret';
export const SECRET_FINGERPRINT = 'token_hash_fingerprint';

/**
 * What identifies a hash secret without revealing it: an HMAC of a fixed label under the secret. Stored
 * in the database, so a replica (or `killswitch operators create`) can tell whether its secret is the one
 * the credentials were hashed with.
 */
export function hashSecretFingerprint(secret: string): string {
  return `v1:${createHmac('sha256', secret).update('killswitch token hash secret fingerprint v1').digest('base64url')}`;
}
