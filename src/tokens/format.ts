import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { crc32 } from 'node:zlib';

// Credential format (GitHub-style): PREFIX + 22 base62 chars of randomness (≥ 130 bits) + 6 base62 chars
// of CRC32(PREFIX + body). The checksum lets us reject typos and garbage before any lookup.

export const AGENT_PREFIXES = { ro: 'mcp_ro_', rw: 'mcp_rw_', admin: 'mcp_admin_' } as const;
export type TokenType = keyof typeof AGENT_PREFIXES;
export const TOKEN_TYPES = Object.keys(AGENT_PREFIXES) as TokenType[];
export const GATEWAY_PREFIX = 'ksgw_';
export const OPERATOR_PREFIX = 'ksop_';

export type CredentialKind = 'agent' | 'gateway' | 'operator';

const ALPHABET = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';
const BODY_LENGTH = 22;
const CHECKSUM_LENGTH = 6;

function base62(n: number, width: number): string {
  let out = '';
  let v = n;
  for (let i = 0; i < width; i++) {
    out = ALPHABET[v % 62] + out;
    v = Math.floor(v / 62);
  }
  return out;
}

function randomBase62(length: number): string {
  let out = '';
  while (out.length < length) {
    // Rejection sampling keeps every character uniform (248 = 4 * 62).
    for (const byte of randomBytes(length * 2)) {
      if (byte < 248 && out.length < length) out += ALPHABET[byte % 62];
    }
  }
  return out;
}

function checksum(prefixAndBody: string): string {
  return base62(crc32(prefixAndBody), CHECKSUM_LENGTH);
}

export function generateCredential(prefix: string): string {
  const body = randomBase62(BODY_LENGTH);
  return prefix + body + checksum(prefix + body);
}

export interface ParsedCredential {
  kind: CredentialKind;
  prefix: string;
  tokenType?: TokenType;
}

const BODY_RE = /^[0-9A-Za-z]+$/;

/** Recognises the prefix and verifies the checksum; undefined for anything malformed. No I/O. */
export function parseCredential(raw: string): ParsedCredential | undefined {
  let parsed: ParsedCredential | undefined;
  for (const [type, prefix] of Object.entries(AGENT_PREFIXES) as [TokenType, string][]) {
    if (raw.startsWith(prefix)) parsed = { kind: 'agent', prefix, tokenType: type };
  }
  if (raw.startsWith(GATEWAY_PREFIX)) parsed = { kind: 'gateway', prefix: GATEWAY_PREFIX };
  if (raw.startsWith(OPERATOR_PREFIX)) parsed = { kind: 'operator', prefix: OPERATOR_PREFIX };
  if (!parsed) return undefined;
  const rest = raw.slice(parsed.prefix.length);
  if (rest.length !== BODY_LENGTH + CHECKSUM_LENGTH || !BODY_RE.test(rest)) return undefined;
  const body = rest.slice(0, BODY_LENGTH);
  if (checksum(parsed.prefix + body) !== rest.slice(BODY_LENGTH)) return undefined;
  return parsed;
}

export function hashCredential(secret: string, raw: string): Buffer {
  return createHmac('sha256', secret).update(raw).digest();
}

export function sameHash(a: Buffer, b: Buffer): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}

/** What lists show instead of the secret: the prefix and the first 4 body characters. */
export function displayPrefix(raw: string, prefix: string): string {
  return raw.slice(0, prefix.length + 4);
}
