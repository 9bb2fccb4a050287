// Secrets never reach the audit table. Arguments are kept in full for forensics (seed 000 US-008), except
// values under secret-looking keys and values that look like credentials wherever they appear.
import { invalid } from '../errors.js';

export const REDACTED = '[REDACTED]';

// The secret words: one list for the key rule (isSecretKey) and the name=value rule in text (VALUE_PATTERNS),
// so the two cannot drift apart. A key is compared lower-cased, split into parts at '-', '_', '.', spaces
// and camelCase steps, the parts joined by '_' (X-Api-Key -> x_api_key, clientSecret -> client_secret,
// PGPASSWORD stays pgpassword); a name in text is matched as written, '_' in a word standing for '_', '-'
// or nothing. Where a word may stand in a key:
// - GLUED: anything may be glued before it (PGPASSWORD, clientsecret, accesstoken), and it must end a part,
//   a plural 's' allowed: token, tokens, access_token, token_url and secrets_arn are secret names;
//   tokenizer, secretary and passwordless are other words.
// - AT_END: anything glued before it, ending the name: DB_PASS, PGPASS, MYSQL_PWD ("pass" inside a word is
//   not: passenger_count, pass_rate).
// - LAST_PART: a whole part ending the name (pin, card_pin, sms_otp; not spin, pinned, otp_sent_at).
// - WHOLE: the whole name (auth, x-auth; not author, oauth, auth_url).
// In text the name must end with the word either way ("token_url=" is not a secret name there).
const SECRET_WORDS = {
  GLUED: [
    'passw(?:or)?d',
    'passphrase',
    'secret',
    'token',
    'api_?key',
    'access_?key',
    'account_?key',
    'priv(?:ate)?_?key',
    'ssh_?key',
    'session_?key',
    'authorization',
    'credential',
    'cookie',
    'bearer',
    'signature',
    'sig',
    'connection_?string',
    'jwt',
  ],
  AT_END: ['pass', 'pwd'],
  LAST_PART: ['pin', 'otp', 'cvv', 'cvc', '(?:mfa|2fa|otp|totp)_?code'],
  WHOLE: ['x?_?auth'],
};
const alt = (words: string[]) => words.join('|');
const SECRET_KEY = new RegExp(
  `(?:${alt(SECRET_WORDS.GLUED)})s?(?:_|$)|(?:${alt(SECRET_WORDS.AT_END)})$|(?:^|_)(?:${alt(SECRET_WORDS.LAST_PART)})s?$|^(?:${alt(SECRET_WORDS.WHOLE)})$`,
);
/** A secret name as written in text (case-insensitive), ending with one of SECRET_WORDS (isSecretKey confirms). */
const inText = (words: string[]) => alt(words).replaceAll('_', '[_-]');
const SECRET_NAME_IN_TEXT = `[a-z0-9_-]*?(?:${inText(SECRET_WORDS.GLUED)})s?|[a-z0-9_-]*?(?:${inText(SECRET_WORDS.AT_END)})|(?:[a-z0-9_-]*[_-])?(?:${inText(SECRET_WORDS.LAST_PART)})s?|(?:${inText(SECRET_WORDS.WHOLE)})`;
// Counters that merely mention tokens are not secrets (token_calls_per_minute is a limit, not a credential;
// server_calls_per_minute_all_tokens counts the calls of every agent), nor are ordinary words that end in
// "pass". Only a rate counter may end in "all_tokens": a bare all_tokens can hold credentials. Compared
// against the key without separators.
const NOT_SECRET_KEY = /(maxtokens|tokencount|tokens?used|tokenlimit|numtokens|tokentype|tokenid|calls?per(minute|hour|day|session)(alltokens)?|(by|com|encom|over|under|tres|sur)pass|xauthority)$/;

interface ValuePattern {
  re: RegExp;
  replace: string | ((...m: string[]) => string);
}

/**
 * Whether a word read after a secret name in prose is a credential rather than the next word of the
 * sentence ("the token endpoint", "token exfiltrating", "rotate secret: moved"): 8 characters or more with
 * a digit or one of `_ + / =`, or 16 or more mixing upper and lower case. Not '-': hyphenated words
 * (re-issued, well-known) are prose.
 */
function looksLikeCredential(word: string): boolean {
  return word.length >= 8 && (/[\d_+/=]/.test(word) || (word.length >= 16 && /[a-z]/.test(word) && /[A-Z]/.test(word)));
}

// What our own messages write after the word "token" to name one, not a credential: a token's display
// prefix (mcp_rw_AbCd…: the type's prefix and at most 7 characters) or its id (a UUIDv7).
const NAMES_A_TOKEN = /^(?:(?:mcp_(?:ro|rw|admin)_|ksgw_|ksop_)[A-Za-z0-9]{0,7}|[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12})\.?$/;

// A secret name and its value as the next word, without '=' or ':' (`aws configure set
// aws_secret_access_key wJalr…`, `password hunter2x`, `token ghp_…`). The name is a secret key by
// isSecretKey holding pass, pwd, secret, token, key, sig or jwt (not tokenizer, secretary), not a flag (the
// flag pattern below) nor naming where the secret is read from (token_path, password_file); the next word
// is masked only when it looks like a credential (looksLikeCredential) and does not name a token
// (NAMES_A_TOKEN). Names are bounded (a long run must not be rescanned from every position).
const SECRET_NAME_THEN_VALUE = /(?<![A-Za-z0-9_.-])(?![-.])([A-Za-z0-9_.-]{0,40}?(?:pass|pwd|secret|token|key|sig|jwt)[A-Za-z0-9_.-]{0,40})([ \t]+)(?!-)([A-Za-z0-9\-._~+/]{8,}=*)/gi;

function maskSecretNameThenValue(s: string): string {
  const re = SECRET_NAME_THEN_VALUE;
  re.lastIndex = 0;
  let out = '';
  let kept = 0;
  for (let m = re.exec(s); m !== null; m = re.exec(s)) {
    const [whole, name, space, value] = m as unknown as [string, string, string, string];
    if (isSecretFlagName(name) && looksLikeCredential(value) && !NAMES_A_TOKEN.test(value)) {
      out += `${s.slice(kept, m.index)}${name}${space}${REDACTED}`;
      kept = m.index + whole.length;
    } else {
      // Not a value: the word after the name may be a secret name itself ("secret password hunter2x").
      re.lastIndex = m.index + name.length;
    }
  }
  return kept === 0 ? s : out + s.slice(kept);
}

/** Whether a name at `at` follows a word of the same line: "rotate secret: …", not "secret: …" or "{ token: …". */
function followsAWord(text: string, at: number): boolean {
  let i = at;
  while (i > 0 && (text[i - 1] === ' ' || text[i - 1] === '\t')) i--;
  return i < at && i > 0 && /[A-Za-z0-9]/.test(text[i - 1]!);
}

/** REDACTED in place of a value, inside the same quotes when it had them (JSON inside a string stays JSON). */
function quoted(value: string): string {
  const q = value.startsWith('\\"') ? '\\"' : value[0] === '"' || value[0] === "'" ? value[0] : '';
  if (!q) return REDACTED;
  return value.length >= 2 * q.length && value.endsWith(q) ? `${q}${REDACTED}${q}` : `${q}${REDACTED}`;
}

/**
 * `scheme://user:` then the password of a URL or connection string, up to its '@' (groups 1 and 2; see
 * the comment in VALUE_PATTERNS). Shared with `killswitch scan` (src/cli/scan/secrets.ts).
 */
export const URL_PASSWORD = /\b([a-z][a-z0-9+.-]{0,31}:\/\/[^:/?#\s"'<>]*:)(?!\d{1,5}[/?#])([^\s@"]*(?:@[^\s@/?#"]*)*)@/gi;

// scheme:// then the userinfo, up to the authority's last '@' (as WHATWG reads it: `https://a@b@host` is
// user "a@b" on host), not past a path, query or fragment ('\\' ends the authority of a web URL).
export const URL_USERINFO = /^([A-Za-z][A-Za-z0-9+.-]*:\/\/)[^/?#\\\s]*@/;

/**
 * A URL as it may be shown or reported: no user, password, query or fragment. Any query parameter may
 * carry a credential whatever its name (`?key=`, `?code=`), so none is kept rather than guessing which.
 * The gateway reports its upstreams' URLs so (src/gateway/config.ts), and the control plane shows any
 * gateway's reported identity so (src/tools/service.ts).
 */
export function redactUrl(value: string): string {
  return value.replace(URL_USERINFO, '$1').replace(/[?#].*$/s, '');
}

/**
 * Query parameters that name where a connection goes, never a credential: libpq's `host`, `hostaddr`,
 * `port` and `dbname` (`postgresql://localhost/app?host=prod-db` connects to prod-db), and the `database`
 * or `server` names of other drivers' URLs.
 */
const TARGET_PARAMETERS = new Set(['host', 'hostaddr', 'port', 'dbname', 'database', 'server', 'servername']);

/**
 * An upstream's URL as a gateway reports it to the control plane: redactUrl, but the query parameters
 * that name the connection's target are kept (TARGET_PARAMETERS, as written), so the control plane reads
 * the hosts and databases the upstream really reaches (an UPSTREAM_MISMATCH for `?host=prod-db`).
 */
export function reportedUrl(value: string): string {
  const at = value.search(/[?#]/);
  if (at < 0 || value[at] === '#') return redactUrl(value);
  const query = value.slice(at + 1).replace(/#.*$/s, '');
  const kept = query.split('&').filter((pair) => TARGET_PARAMETERS.has(decodeURIComponentSafe(pair.split('=')[0] ?? '').toLowerCase()));
  return kept.length > 0 ? `${redactUrl(value)}?${kept.join('&')}` : redactUrl(value);
}

function decodeURIComponentSafe(text: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    return text;
  }
}

/** A kill's target key naming an agent token by its id (UUIDv7), as src/kills builds it. */
const KILL_TOKEN_KEY = /^token:[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

/**
 * redactValue for the details the server builds for an audit row or an alert. A kill's `target_key`
 * `token:<agent token id>` is built by the server from an id, not a credential, so it is kept as it was
 * (redactValue masks what follows "token:" anywhere else, as it must in an agent's arguments).
 */
export function redactDetails(details: Record<string, unknown>): Record<string, unknown> {
  const out = redactValue(details) as Record<string, unknown>;
  const key = details['target_key'];
  if (typeof key === 'string' && KILL_TOKEN_KEY.test(key)) out['target_key'] = key;
  return out;
}

/** The MySQL and MariaDB clients that take a password glued to -p (an .exe suffix allowed). */
const MYSQL_CLIENT = `(?:mysql|mysqldump|mysqladmin|mysqlimport|mysqlshow|mysqlcheck|mysqlpump|mysqlbinlog|mariadb|mariadb-dump|mariadb-admin|mariadb-import|mariadb-show|mariadb-check)(?:\\.exe)?`;

/** A MySQL client's `-p<password>` inside one command (see the pattern that uses it). */
const MYSQL_GLUED_PASSWORD = /(^|[\s"'])-p(?!\[REDACTED\])('[^']*'?|"[^"]*"?|[^\s;&|'"]+)/g;

/** The schemes of an Authorization header whose credentials follow a space (RFC 9110 and common ones). */
const AUTH_SCHEME = 'Bearer|Basic|Digest|Token|Negotiate|NTLM|OAuth|AWS4-HMAC-SHA256|ApiKey|SSWS';

/** A bare secret word that is prose after a word of the same line when followed by ':' (see its pattern). */
const PROSE_NAME = /^(?:token|secret|auth|authorization|cookie|credentials?|bearer)$/i;

/**
 * A bare short-code word (a PIN, a one-time password, a card's security code) that is prose after a word
 * of the same line when followed by ':' ("the OTP: sent to your phone"). Such codes are digits or
 * upper-case letters, too short for looksLikeCredential, so the test is isProseWord instead.
 */
const PROSE_CODE_NAME = /^(?:pin|otp|cvv|cvc)s?$/i;

/** A word of prose, not a code: letters only, lower case after the first ("sent", "Expired"; not 123456, K7QXZ). */
function isProseWord(word: string): boolean {
  return /^[A-Za-z][a-z]*$/.test(word);
}

// What the bare name `auth` holds when it says how a client authenticates, not with what (`WHERE auth =
// 'oauth'`, `auth=basic`, `{ auth: 'none' }`). Not "password" nor "login": both are common passwords.
const AUTH_METHOD = /^(?:none|basic|bearer|digest|oauth[12]?|xoauth2|oidc|openid|saml2?|ldap|kerberos|gssapi|ntlm|negotiate|sso|mfa|2fa|totp|webauthn|passkeys?|certs?|certificate|mtls|tls|ssl|scram-sha-256|md5|trust|peer|ident|reject|plain|cram-md5|anonymous|api_?key|jwt|token|true|false|on|off|yes|no|required|optional|enabled|disabled|null)$/i;

/** Whether `value` under the name `name` only names an authentication method (AUTH_METHOD), quoted or not. */
function namesAnAuthMethod(name: string, value: unknown): boolean {
  if (typeof value !== 'string' || !/^auth$/i.test(name)) return false;
  const unquoted = /^(\\?["'])(.*)\1$/.exec(value);
  return AUTH_METHOD.test(unquoted ? unquoted[2]! : value);
}

// Commands an environment variable is commonly set empty for (`PGPASSWORD= psql -h db`): database
// clients and tools that read a password from the environment. A list, not any word: a password is a word
// too (`PGPASSWORD= swordfish -h db`, `MYSQL_PWD= letmein -u root`), and one kept is a leak.
const ENV_COMMANDS = new Set([
  'psql', 'pg_dump', 'pg_dumpall', 'pg_restore', 'pg_basebackup', 'pg_isready', 'pgbench', 'createdb', 'dropdb', 'createuser', 'vacuumdb', 'reindexdb',
  'mysql', 'mysqldump', 'mysqladmin', 'mysqlimport', 'mysqlcheck', 'mariadb', 'mariadb-dump',
  'mongosh', 'mongo', 'mongodump', 'mongorestore', 'mongoexport', 'mongoimport',
  'redis-cli', 'sqlcmd', 'sqlplus', 'clickhouse-client', 'cqlsh', 'influx', 'sqlite3',
  'curl', 'wget', 'git', 'ssh', 'scp', 'rsync', 'sftp', 'docker', 'kubectl', 'helm', 'aws', 'gcloud', 'az', 'terraform', 'ansible', 'vault',
  'npm', 'npx', 'node', 'python', 'python3', 'ruby', 'java', 'go', 'make', 'bash', 'sh', 'env', 'sudo', 'exec',
]);

/** A command after an empty assignment: one of ENV_COMMANDS, or a path (./run, /usr/bin/mysql). */
function isCommandName(word: string): boolean {
  const base = word.slice(word.lastIndexOf('/') + 1);
  // A path starts like one (a password may hold a '/', rarely a leading './' or '/').
  return ENV_COMMANDS.has(base) || (/^(?:\.{1,2}\/|~\/|\/)[\w.~/-]*$/.test(word) && !/\d/.test(base));
}

/**
 * Whether `NAME= word -flag …` runs a command with NAME set empty (`PGPASSWORD= psql -h db`): a shell ends
 * an unquoted assignment at the space, so the word after it is the command, not the value. Only an
 * environment variable's name (upper case: not `--password=`, a flag, which takes the next word), with the
 * '=' glued to it and spaces (not a newline) after it, a command (isCommandName) and a flag after that.
 */
function isEmptyAssignmentBeforeCommand(head: string, name: string, value: string, rest: string): boolean {
  return /^[A-Z][A-Z0-9_]*$/.test(name) && /^=[ \t]+$/.test(head.slice(name.length)) && isCommandName(value) && /^[ \t]+--?[A-Za-z]/.test(rest);
}

// An AWS access key id, and its secret access key as a word of its own: 40 characters of the base64
// alphabet without '=', mixing upper and lower case and a digit, '/' or '+' (a git SHA is hex, lower case).
const AWS_KEY_ID = /\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[A-Z0-9]{16}\b/;
const AWS_SECRET_NAME = /aws.{0,3}secret|secret.{0,3}access.{0,3}key/i;
const AWS_SECRET_KEY = /(?<![A-Za-z0-9/+=])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])/g;

/**
 * An AWS secret access key has no prefix of its own: it is masked where the text says what it is, next to an
 * access key id (`AKIA… wJalr…`, the CSV AWS hands out) or after a name such as aws_secret_access_key in any
 * form (`aws_secret_access_key "wJalr…"`, `SecretAccessKey`), anywhere in the same string.
 */
function maskAwsSecretKey(s: string): string {
  if (!AWS_KEY_ID.test(s) && !AWS_SECRET_NAME.test(s)) return s;
  AWS_SECRET_KEY.lastIndex = 0;
  return s.replace(AWS_SECRET_KEY, (m) => (/[A-Z]/.test(m) && /[a-z]/.test(m) && /[\d/+]/.test(m) ? REDACTED : m));
}

/** The name=value rule's pattern (see its place in VALUE_PATTERNS for what it masks). */
const NAME_VALUE = new RegExp(
  `(?<![a-z0-9_-])((${SECRET_NAME_IN_TEXT})(\\\\?["'])?\\s*([=:])\\s*)(?!\\[REDACTED\\])(\\\\"(?:[^"\\\\]|\\\\[^"])*(?:\\\\"|$)|"(?:[^"\\\\]|\\\\.)*(?:"|$)|'(?:[^']|''(?![\\s,;)]|$))*(?:'|$)|((?:[a-z_][a-z0-9_.]{0,63}\\(\\s*){1,4})('(?:[^']|''(?![\\s,;)]|$))*(?:'|$)|"(?:[^"\\\\]|\\\\.)*(?:"|$))|(?:(${AUTH_SCHEME})[ \\t]+(?:"[^"\\n]*"?|'[^'\\n]*'?|[^\\s&;,'"]+)|[^\\s&;,'"]+))`,
  'gi',
);

function nameValue(
  m: string,
  head: string,
  name: string,
  nameQuote: string | undefined,
  sep: string,
  value: string,
  call: string | undefined,
  literal: string | undefined,
  scheme: string | undefined,
  at: number,
  text: string,
): string {
  if (!isSecretKey(name)) return m;
  // `grep "api_key=" f | curl …`, `echo "token:" ; rm -rf …`: the quote right after the separator is the
  // one that closes the string the name stands in (the same quote opened it), so the value is empty. Read
  // as a value it would swallow the rest of the command (to the next quote, or to the end), hiding it from
  // the trail. What follows is read again: it may hold a pair of its own.
  const before = text[at - 1];
  if (!nameQuote && (before === '"' || before === "'") && value.startsWith(before) && head.endsWith(sep)) {
    return `${head}${before}${value.slice(1).replace(new RegExp(NAME_VALUE.source, 'gi'), nameValue as (substring: string, ...args: unknown[]) => string)}`;
  }
  if (call) return `${head}${call}${quoted(literal!)}`;
  if (scheme) {
    // The value is a scheme, a space and the next word. Under Authorization or auth (auth=Bearer abc123,
    // X-Auth: Basic …) the scheme is kept and the word after it is the credential. Under another name
    // (password=Token abc) the scheme word may be the secret itself: both are masked. Until 2026-12-06 the
    // other names masked the scheme and kept the word after it: `auth = Bearer abc123` kept abc123.
    // The credential may be quoted (auth=Bearer "abc123"): the quotes are kept, what they hold is masked.
    const credential = value.slice(scheme.length).trimStart();
    const space = value.slice(scheme.length, value.length - credential.length);
    // `"Authorization: Bearer " + token`: the quote after the scheme closes the string the name stands in
    // (as above): no credential here, and what follows is read again.
    if (!nameQuote && (before === '"' || before === "'") && credential.startsWith(before)) {
      return `${head}${scheme}${space}${before}${credential.slice(1).replace(new RegExp(NAME_VALUE.source, 'gi'), nameValue as (substring: string, ...args: unknown[]) => string)}`;
    }
    if (!/auth(?:orization)?$/i.test(name)) return `${head}${REDACTED}${space}${credential === REDACTED ? credential : quoted(credential)}`;
    // Digest is its own pattern's; what names a token (Bearer mcp_rw_AbCd…) is kept, as by the scheme pattern.
    if (/^digest$/i.test(scheme) || credential === REDACTED || NAMES_A_TOKEN.test(credential.replace(/…$/, ''))) return m;
    return `${head}${scheme}${space}${quoted(credential)}`;
  }
  if (namesAnAuthMethod(name, value)) return m;
  if (isEmptyAssignmentBeforeCommand(head, name, value, text.slice(at + m.length))) return m;
  const prose = sep === ':' && !nameQuote && !/^\\?["']/.test(value) && followsAWord(text, at);
  if (prose && PROSE_NAME.test(name) && !looksLikeCredential(value)) return m;
  if (prose && PROSE_CODE_NAME.test(name) && isProseWord(value)) return m;
  return `${head}${quoted(value)}`;
}

/** Longest first cookie name the Cookie pattern reads (browsers cap a cookie's name and value at 4096 bytes together; real names are short). */
const MAX_COOKIE_NAME = 256;

const VALUE_PATTERNS: Array<ValuePattern | ((s: string) => string)> = [
  // PEM private key blocks (RSA, EC, OPENSSH, ENCRYPTED ...).
  { re: /-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----[\s\S]*?(-----END [A-Z0-9 ]*PRIVATE KEY-----|$)/g, replace: `${REDACTED}` },
  // Authorization header values: whatever follows an auth scheme (Bearer, Basic, Token after
  // "Authorization:"). Not a token's display prefix (mcp_rw_AbCd…, too short for a credential, see the
  // pattern after next) or its id (a UUIDv7), which alerts and denials name so an operator can tell the token.
  {
    re: /\b(Bearer|Basic|(?<=authorization["']?\s{0,8}[:=]\s{0,8}["']?)Token)\s+(?!(?:mcp_(?:ro|rw|admin)_|ksgw_|ksop_)[A-Za-z0-9]{0,7}(?![A-Za-z0-9])|[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}(?![A-Za-z0-9\-_~+/]|\.[A-Za-z0-9]))[A-Za-z0-9\-._~+/]{8,}=*/gi,
    replace: (_m, scheme) => `${scheme} ${REDACTED}`,
  },
  // "token ghp_…", "aws_secret_access_key wJalr…" (runs before the next pattern: "Token mcp_rw_8f7a6b5c…",
  // cut by a summary, is masked whole).
  maskSecretNameThenValue,
  // Our own credentials: agent tokens, gateway keys, operator keys.
  { re: /\b(mcp_(?:ro|rw|admin)_|ksgw_|ksop_)[A-Za-z0-9]{8,}/g, replace: (_m, prefix) => `${prefix}${REDACTED}` },
  // AWS secret access keys next to what names them (before the key ids are masked), then the key ids.
  maskAwsSecretKey,
  { re: new RegExp(AWS_KEY_ID.source, 'g'), replace: REDACTED },
  // GitHub, GitLab, npm, Slack, OpenAI/Anthropic style API keys, Google API keys, Stripe keys, Hugging
  // Face tokens (hf_…), SendGrid keys (SG.<id>.<secret>).
  {
    re: /\b(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,}|glpat-[A-Za-z0-9_-]{20,}|npm_[A-Za-z0-9]{36,}|xox[abposr]-[A-Za-z0-9-]{10,}|sk-(?:ant-|proj-)?[A-Za-z0-9_-]{20,}|AIza[0-9A-Za-z_-]{30,}|[rs]k_(?:live|test)_[A-Za-z0-9]{16,}|hf_[A-Za-z0-9]{30,}|SG\.[A-Za-z0-9_-]{16,}\.[A-Za-z0-9_-]{16,})/g,
    replace: REDACTED,
  },
  // Slack incoming webhooks and workflow triggers: the URL's path is the credential (keeps the host).
  { re: /\b(hooks\.slack\.com\/(?:services|workflows|triggers)\/)[A-Za-z0-9_/-]+/gi, replace: (_m, head) => `${head}${REDACTED}` },
  // JSON Web Tokens.
  { re: /\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}/g, replace: REDACTED },
  // Passwords inside URLs and connection strings: scheme://user:PASSWORD@host -> keep user and host. The
  // password may hold '/' and '@' (pa/ss, p@ss): it runs to the last '@' before the first '/', '?' or '#'
  // that follows an '@' (the host's end). A port followed by a path ("host:8080/u/@me") is not a password.
  // The scheme's length is bounded: unbounded, every word start of a long "a-b-c-…" run rescanned the
  // run to its end (quadratic: 3.5 s for 100 KB).
  { re: URL_PASSWORD, replace: (_m, head) => `${head}${REDACTED}@` },
  // HTTP Digest authentication: its response (a hash of the password, the nonce and the request, which a
  // dictionary attack can reverse with the nonce and realm written beside it) among the parameters after
  // the scheme; username, realm, uri and the nonces are kept. `response=` anywhere else (a status, an API
  // parameter) is not a credential and is kept.
  {
    re: /\b(Digest\s+(?:[a-z][\w-]*\s*=\s*(?:\\?"[^"\n]*"|[^\s,"]*)\s*(?:,\s*)?){0,16}?response\s*=\s*)(?!\\?"?\[REDACTED\])(\\?"[^"\n]*"?|[^\s,"\\]+)/gi,
    replace: (_m, head, value) => `${head}${quoted(value)}`,
  },
  // A Cookie or Set-Cookie header's value, all of it up to the end of the line or a quote: every cookie in
  // it may be a session (Cookie: session=…; theme=dark). Only when it has the header's shape (name=value).
  // The first cookie's name is read at most MAX_COOKIE_NAME characters far: unbounded, every `cookie:` of
  // a long run without '=' ("Set-Cookie:Set-Cookie:…") rescanned the run to its end (quadratic: 5 s for
  // 256 KB). A longer run is no name a client sends, and is masked to the end of the line (fail closed).
  {
    re: new RegExp(
      `(?<![a-z0-9_-])((?:set-)?cookie\\\\?["']?\\s*:\\s*)(?!\\[REDACTED\\])([^\\s=;,"'\\\\]{1,${MAX_COOKIE_NAME}}=[^\\r\\n"'\\\\]*|[^\\s=;,"'\\\\]{${MAX_COOKIE_NAME + 1}}[^\\r\\n"'\\\\]*)`,
      'gi',
    ),
    replace: (_m, head) => `${head}${REDACTED}`,
  },
  // key=value pairs in query strings, DSNs, env-style text and JSON inside text: password=...,
  // PGPASSWORD=..., aws_secret_access_key = ..., "password": "...", \"token\":\"...\". The name ends with one
  // of SECRET_WORDS, placed as the key rule places it, and isSecretKey confirms it (max_tokens=500 and
  // bypass: are kept). A quoted value keeps its quotes; one cut off by truncation is masked to the end; a
  // SQL literal may hold doubled quotes ('it''s'). A function call's first quoted argument is the value and
  // the call is kept (password = crypt('[REDACTED]', gen_salt('bf'))). A value already masked is left with
  // what follows it (https://x-access-token:[REDACTED]@github.com/o/r.git keeps its host). An
  // Authorization header keeps its scheme (Authorization: Bearer [REDACTED]; Digest is left to the Digest
  // pattern above, which masks only its response). The bare words token, secret, auth, authorization,
  // cookie, credential(s) and bearer with ':' after a word of the same line are prose ("rotate secret:
  // moved", "the cookie: a jar"): the unquoted value is masked only when it looks like a credential. Kept
  // too: auth naming a method (auth = 'oauth'), a word of prose after pin/otp/cvv/cvc ("the OTP: sent"), and
  // the command after a shell's empty assignment (PGPASSWORD= psql -h db).
  { re: NAME_VALUE, replace: nameValue as (substring: string, ...args: unknown[]) => string },
  // SQL: CREATE/ALTER USER|ROLE ... PASSWORD '...', MySQL and Oracle IDENTIFIED BY '...'.
  { re: /\b((?:PASSWORD|IDENTIFIED\s+BY)\s+)('(?:[^']|'')*(?:'|$)|"(?:[^"]|"")*(?:"|$))/gi, replace: (_m, head, value) => `${head}${quoted(value)}` },
  // The value after a command-line flag with a secret-looking name (isSecretFlag): `--password S3cret`,
  // `--api-key=…`, `-storepass …`, quoted or not. The name must hold one of the secret words (so other
  // flags never swallow the argument that follows them); isSecretKey decides, and flags that name where
  // the secret comes from (--password-file, --password-stdin) keep their value. A value starting with '-'
  // is the next flag. Names are bounded (a long run of dashes must not be rescanned from every dash).
  {
    re: /(^|[\s"'])(--?((?:[a-z][a-z0-9_.-]{0,40}?)?(?:pass|pwd|secret|token|key|auth|credential|cookie|bearer|pin|sig|jwt|connection)[a-z0-9_.-]{0,40})(?:=|\s+))(?!-)(\\"(?:[^"\\]|\\[^"])*(?:\\"|$)|"(?:[^"\\]|\\.)*(?:"|$)|'[^']*(?:'|$)|[^\s;&|'"]+)/gi,
    replace: (m, pre, head, name, value) => (isSecretFlagName(name) ? `${pre}${head}${quoted(value)}` : m),
  },
  // MySQL and MariaDB clients take the password glued to -p (`mysql -uroot -phunter2 app`): masked after
  // one of their command names, on the same command (up to a newline, ';', '&' or '|' outside quotes). `-p` followed by a
  // space prompts for the password and the next word is the database, so it is kept, as is `-P3306` (port).
  {
    re: new RegExp(`(\\b${MYSQL_CLIENT}(?=[\\s"'])(?:'[^'\\n]*'?|"[^"\\n]*"?|[^\\n;&|'"])*)`, 'g'),
    replace: (command) => command.replace(MYSQL_GLUED_PASSWORD, `$1-p${REDACTED}`),
  },
  // curl -u user:password, --user user:password (a numeric uid:gid, as in docker -u 1000:1000, is kept).
  {
    re: /(^|\s)(-u\s*|--user[=\s]\s*)(?!["']?\d+:\d+(?:["'\s]|$))(?:(["'])([^:"'\s]*):[^"']*|([^\s:"']*):[^\s"']+)/g,
    replace: (_m, pre, flag, q, quotedUser, user) => (q ? `${pre}${flag}${q}${quotedUser}:${REDACTED}` : `${pre}${flag}${user}:${REDACTED}`),
  },
];

// A necessary condition of every pattern above, checked first: most strings of a call (paths, names,
// messages) match none of the patterns, and one test is far cheaper than eleven replaces. Each
// alternative is a piece every match of one pattern contains (case-insensitive, so a superset): the
// URL-password pattern needs an '@', a key=value pair one of the secret words (pass, pwd, secret, key,
// sig, jwt, x-auth, or token then an optional quote and '=' or ':'), the SQL one "pass" or "identified",
// curl's "-u" or "--user" and a ':' in the next word (psql's bare "-U" is not enough), a secret flag its
// secret word with a dash before it within a flag name's reach (the word first: a lookbehind tried at every
// dash of a long "-a-a-…" run made the test 200 times slower). "token" and
// "mcp_" alone are not enough: our own denial messages name token types ("ask an operator for an
// mcp_admin_ token"), and each went down the full path (1.8 µs against 0.6 µs for such a message). A
// name holding "token" needs whitespace and 8 credential characters after it (at most 40 name characters
// after "token": SECRET_NAME_THEN_VALUE's bound); one of our credentials its type's
// full prefix and a letter or digit. The alternatives are grouped by first letter: with the words added
// for the patterns above, the flat list made this test ~30% slower on strings that hold no secret. The
// secret words that need a separator after them (auth=, cookie:, pin=, the Digest response=, …) are one
// alternative starting at the '=' or ':' with a lookbehind for the word (as separate words they made this
// test twice as slow on long text); a Hugging Face token starts at its '_', Slack webhooks and SendGrid
// keys join the 's' group.
// test/unit/audit-rows.test.ts checks that the fast and the full path agree.
const MAY_HOLD_SECRET =
  /a(?:kia|sia|gpa|ida|roa|npa|nva|ipa|iza)|b(?:egin|earer|asic)|token(?:\\?["']?\s*[=:]|[\w.-]{0,40}\s+[A-Za-z0-9\-._~+/]{8})|m(?:cp_(?:ro|rw|admin)_[a-z0-9]|ysql|ariadb)|k(?:sgw_|sop_|ey|_live_|_test_)|g(?:h[pousr]_|ithub_pat_|lpat-)|npm_|x(?:ox|-auth)|s(?:k-|ecret|ig|g\.[\w-]{16}|lack\.com)|eyJ|@|p(?:ass|wd)|jwt|identified|-u\S*\s*\S*:|(?:token|auth|credential|cookie|pin|connection)(?<=-[\w.-]{0,52})|[=:](?<=(?:auth(?:orization)?|credentials?|cookies?|connection[_-]?strings?|pins?|otps?|cv[vc]s?|(?:mfa|2fa|otp|totp)[_-]?codes?|response)\\?["']?\s*[=:])|_(?<=hf_)[a-z0-9]{30}/i;

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g;
// NUL is matched deliberately: Postgres refuses it in text and jsonb.
// biome-ignore lint/suspicious/noControlCharactersInRegex: NUL is what this looks for
const NUL_OR_SURROGATE = /[\u0000\uD800-\uDFFF]/;

/** Characters Postgres cannot store in text or jsonb: NUL and unpaired surrogates. */
export function storable(s: string): string {
  if (!NUL_OR_SURROGATE.test(s)) return s;
  const noNul = s.includes('\u0000') ? s.replaceAll('\u0000', '\uFFFD') : s;
  return noNul.replace(LONE_SURROGATE, '\uFFFD');
}

/**
 * Free text an operator or agent sends (a session's purpose, a resume reason, an acknowledgement note)
 * must be storable as it is: Postgres refuses NUL in text and jsonb, and an unpaired surrogate cannot
 * cross to Redis (its Lua cjson refuses the escape) or into jsonb. Refused with a 400 naming the field
 * rather than altered, so what is stored and audited is what was sent.
 */
export function requireStorableText(field: string, value: string | undefined): void {
  if (value !== undefined && storable(value) !== value) {
    throw invalid(field, 'contains a NUL character (\\u0000) or an unpaired surrogate (\\ud800-\\udfff), which cannot be stored');
  }
}

/**
 * An optional reason an operator gave for an action, as its audit row's details take it: `{reason}`
 * masked, or nothing when none was given. Refused (400) when it cannot be stored (requireStorableText).
 */
export function auditedReason(reason: string | undefined): { reason?: string } {
  requireStorableText('reason', reason);
  return reason === undefined ? {} : { reason: redactText(reason) };
}

/** The prefilter: false means no pattern can match `s` (redactText's fast path; exported for the tests). */
export function mayHoldSecret(s: string): boolean {
  return MAY_HOLD_SECRET.test(s);
}

// Characters that show nothing: one inside a credential (ghp_<ZWSP>abc…) hid it from every pattern.
const INVISIBLE = /[\u00AD\u200B-\u200D\u2060\uFEFF]/;
const INVISIBLE_ALL = /[\u00AD\u200B-\u200D\u2060\uFEFF]/g;

/**
 * Masks credential-looking substrings of a free-text value (also used for messages and errors). A value
 * holding invisible characters is also read without them: when that reading has a secret, it is what is
 * kept (masked, and without the invisible characters), so a zero-width space cannot smuggle a credential
 * into the trail.
 */
export function redactText(s: string): string {
  const out = mayHoldSecret(s) ? redactTextFully(s) : storable(s);
  if (!INVISIBLE.test(s)) return out;
  const visible = s.replace(INVISIBLE_ALL, '');
  if (!mayHoldSecret(visible)) return out;
  const masked = redactTextFully(visible);
  return masked === storable(visible) ? out : masked;
}

/**
 * redactText for the output of a process we started (the embedded Unleash, a gateway's upstream), which
 * may also print the secrets we handed it in forms no pattern knows (`password 'hunter2'`, a bare token):
 * each of `known` is replaced by REDACTED first, longest first.
 */
export function redactTextKnowing(s: string, known: readonly string[]): string {
  let out = s;
  for (const secret of known) if (secret !== '' && out.includes(secret)) out = out.replaceAll(secret, REDACTED);
  return redactText(out);
}

/** The values of `known` worth replacing, longest first (a secret inside another is replaced after it). */
export function knownSecrets(values: Iterable<string>): string[] {
  return [...new Set(values)].filter((v) => v.length > 0).sort((a, b) => b.length - a.length);
}

/** redactText without the fast path (exported for the test that the two agree). */
export function redactTextFully(s: string): string {
  let out = storable(s);
  for (const p of VALUE_PATTERNS) {
    if (typeof p === 'function') {
      out = p(out);
      continue;
    }
    p.re.lastIndex = 0;
    out = out.replace(p.re, p.replace as (substring: string, ...args: string[]) => string);
  }
  return out;
}

// Rows repeat a small vocabulary of keys (limit names, argument names); the verdict of the first few
// thousand short ones is kept. The cap bounds what agent-chosen keys can make us hold, never the result.
const SECRET_KEY_MEMO_MAX = 4_096;
const secretKeyMemo = new Map<string, boolean>();

export function isSecretKey(key: string): boolean {
  let secret = secretKeyMemo.get(key);
  if (secret === undefined) {
    const k = key
      .replace(/([a-z0-9])(?=[A-Z])/g, '$1_')
      .toLowerCase()
      .replace(/[-_\s.]+/g, '_');
    secret = SECRET_KEY.test(k) && !NOT_SECRET_KEY.test(k.replaceAll('_', ''));
    if (secretKeyMemo.size < SECRET_KEY_MEMO_MAX && key.length <= 64) secretKeyMemo.set(key, secret);
  }
  return secret;
}

// A flag whose name holds a secret word but whose value says where the secret is read from, not the secret.
const NOT_SECRET_FLAG = /(file|path|dir|stdin|env)$/;
const FLAG = /^--?([A-Za-z][A-Za-z0-9_.-]*)$/;

function isSecretFlagName(name: string): boolean {
  return isSecretKey(name) && !NOT_SECRET_FLAG.test(name.toLowerCase().replace(/[-_.]/g, ''));
}

/**
 * Whether a whole command-line argument is a flag whose value is a secret: `--password`, `--api-key`,
 * `--token`, `-storepass` (any name isSecretKey recognises, with one or two dashes), but not one naming
 * where the secret comes from (`--password-file`, `--password-stdin`). `-p` is not: too common
 * (`mkdir -p`, `docker -p 8080:80`).
 */
export function isSecretFlag(arg: string): boolean {
  const m = FLAG.exec(arg);
  return m !== null && isSecretFlagName(m[1]!);
}

const MAX_DEPTH = 32;

// A file of code or documentation, by its extension (src/auth/token.ts, docs/secrets.md): as an object
// key (a map of files to their contents or changes) it names the file, not a secret. Data files (.txt,
// .json, .env, .pem, none: /run/secrets/db_password, a Vault or SSM path) keep the secret-name rule.
const SOURCE_FILE = /^[^\s=]*\.(?:[cm]?[jt]sx?|py|rb|go|rs|java|kts?|scala|swift|c|h|cc|cpp|hpp|cs|php|vue|svelte|sh|sql|md|mdx|rst|adoc|html?|s?css)$/i;

/**
 * Whether an object key (or the name of a [name, value] pair or a { name, value } object) names a secret:
 * isSecretKey, except a path to a file of code or documentation (SOURCE_FILE), whose value is its
 * content and is masked by the text rules like a write_file's `content` (a real token in it still is).
 */
function namesASecret(key: string): boolean {
  return isSecretKey(key) && !SOURCE_FILE.test(key);
}

/** An object key as stored (masked when it holds a credential, made storable) and whether its value is secret. */
interface KeyVerdict {
  key: string;
  secret: boolean;
}

// The verdicts of the first few thousand short keys, as for isSecretKey; a key that holds a credential is
// never kept here (the memo would hold the credential for the life of the process).
const keyVerdictMemo = new Map<string, KeyVerdict>();

function keyVerdict(k: string): KeyVerdict {
  let kv = keyVerdictMemo.get(k);
  if (kv === undefined) {
    // A key can be a credential itself ({"ghp_…": 1}, a map keyed by token): masked like any text. Whether
    // its value is secret is asked of the masked key, so the credential reaches no memo.
    const key = redactText(k);
    kv = { key, secret: namesASecret(key) };
    if (key === k && keyVerdictMemo.size < SECRET_KEY_MEMO_MAX && k.length <= 64) keyVerdictMemo.set(k, kv);
  }
  return kv;
}

/**
 * redactValue of an object some of whose keys masking (or making storable) changed: those are renamed so that no two keys of the object become one and
 * no value is lost: a changed key that is already taken, by a key kept as it was or by an earlier changed
 * one, gets " #2", " #3", … ({"ghp_A…": 1, "ghp_B…": 2} -> {"[REDACTED]": 1, "[REDACTED] #2": 2}). Keys
 * kept as they were are never renamed. Stable: the same object (the same keys in the same order) always
 * gives the same keys; no hash of the credential is written.
 */
function redactRenamedKeys(obj: Record<string, unknown>, keys: string[], named: boolean, depth: number): Record<string, unknown> {
  const verdicts = keys.map(keyVerdict);
  const taken = new Set(keys.filter((k, i) => verdicts[i]!.key === k));
  // The suffix each masked key last got: `taken` only grows, so the next free one is never lower. Searched
  // from 2 every time, an object of thousands of credential keys was quadratic (6,000 in 256 KB: 2.4 s).
  const lastSuffix = new Map<string, number>();
  const out: Record<string, unknown> = {};
  for (let i = 0; i < keys.length; i++) {
    const k = keys[i]!;
    const v = obj[k];
    if (v === undefined || typeof v === 'function') continue;
    const kv = verdicts[i]!;
    let key = kv.key;
    if (key !== k) {
      let n = lastSuffix.get(kv.key) ?? 1;
      if (n > 1) key = `${kv.key} #${n}`;
      while (taken.has(key)) key = `${kv.key} #${++n}`;
      lastSuffix.set(kv.key, n);
      taken.add(key);
    }
    out[key] = masksWhole(kv, named, k, v) ? REDACTED : redactValue(v, depth + 1);
  }
  return out;
}

/**
 * Whether an object's value is replaced whole: under a secret key (unless `auth` names a method: { auth:
 * 'oauth' }), or the `value` of a { name | key | field, value } object naming a secret.
 */
function masksWhole(kv: KeyVerdict, named: boolean, k: string, v: unknown): boolean {
  return ((kv.secret && !namesAnAuthMethod(k, v)) || (named && k === 'value')) && maskable(v);
}

/** argv[0] of a MySQL or MariaDB client (a path or .exe allowed). */
const MYSQL_COMMAND = new RegExp(`(?:^|[/\\\\])${MYSQL_CLIENT}$`, 'i');

/** What a secret name's value is replaced by: anything but null, a boolean or the empty string. */
function maskable(v: unknown): boolean {
  return v !== undefined && v !== null && typeof v !== 'boolean' && v !== '';
}

/**
 * Deep copy of a JSON-like value with secrets masked and strings made storable. Values under a secret key
 * are replaced whole (objects too); numbers under such keys as well (PINs), booleans and null are kept. So
 * are the second element of a [name, value] pair and the `value` of a { name | key | field, value } object
 * whose name is secret.
 */
export function redactValue(value: unknown, depth = 0): unknown {
  if (typeof value === 'string') return redactText(value);
  if (value === null || typeof value === 'boolean') return value;
  if (typeof value === 'number') return Number.isFinite(value) ? value : null;
  if (typeof value === 'bigint') return value.toString();
  // As JSON.stringify would write it (an object with no own keys, a Date was stored as {}: an operator
  // key's expires_at in its operator_key.created row, a kill's or grant's times).
  if (value instanceof Date) return Number.isNaN(value.getTime()) ? null : value.toISOString();
  if (depth >= MAX_DEPTH) return REDACTED;
  if (Array.isArray(value)) {
    const out = value.map((v) => redactValue(v, depth + 1));
    // A name/value pair (headers as [["X-Api-Key", "…"]]): the value of a secret name. Not a flag (below).
    if (value.length === 2 && typeof value[0] === 'string' && !value[0].startsWith('-') && namesASecret(value[0]) && maskable(value[1])) out[1] = REDACTED;
    // Command lines as argv arrays (["curl", "-u", "bob:hunter2"], ["--password", "hunter2"]): the flag
    // and its value are two strings. A value starting with '-' is the next flag. A MySQL client's
    // password is glued to its flag (["mysql", "-uroot", "-phunter2"]).
    // (the client may come after a wrapper: ["docker", "exec", "db", "mysql", "-phunter2"])
    const mysqlAt = value.findIndex((v) => typeof v === 'string' && MYSQL_COMMAND.test(v));
    for (let i = 1; i < out.length; i++) {
      const mysql = mysqlAt >= 0 && i > mysqlAt;
      const flag = value[i - 1];
      const v = value[i];
      if ((flag === '-u' || flag === '--user') && typeof out[i] === 'string') out[i] = redactText(`-u ${out[i]}`).slice(3);
      else if (mysql && typeof v === 'string' && v.length > 2 && v.startsWith('-p')) out[i] = `-p${REDACTED}`;
      else if (typeof flag === 'string' && isSecretFlag(flag) && ((typeof v === 'string' && v !== '' && !v.startsWith('-')) || typeof v === 'number')) out[i] = REDACTED;
    }
    return out;
  }
  if (typeof value === 'object') {
    const obj = value as Record<string, unknown>;
    const out: Record<string, unknown> = {};
    // A form field or header as an object ({ name: "password", value: "…" }, also key or field): its value.
    const named = [obj['name'], obj['key'], obj['field']].some((n) => typeof n === 'string' && namesASecret(n));
    const keys = Object.keys(obj);
    for (const k of keys) {
      const v = obj[k];
      if (v === undefined || typeof v === 'function') continue;
      const kv = keyVerdict(k);
      // A key masking changed (rare): start again, naming every key so that none collide.
      if (kv.key !== k) return redactRenamedKeys(obj, keys, named, depth);
      out[k] = masksWhole(kv, named, k, v) ? REDACTED : redactValue(v, depth + 1);
    }
    return out;
  }
  return null;
}
