import { Transform } from 'node:stream';
import { knownSecrets, redactTextKnowing } from '../audit/redact.js';

// The embedded Unleash's stdout and stderr reach ours as they are written, and Unleash logs what it was
// given: on a new database, at info, "Creating default admin user, with username 'admin' and password
// '<UNLEASH_ADMIN_PASSWORD>'". Each line passes here first: the credentials we handed the child are
// replaced by REDACTED wherever they appear, and the rest is masked like audit text (redactText).

/** A line longer than this is masked and written without waiting for its newline (memory stays bounded). */
const LINE_MAX_CHARS = 64 * 1024;

/** The child's output, line by line, with `secrets` (the values given to it) and credential-looking text masked. */
export function maskedChildOutput(secrets: readonly string[]): Transform {
  const known = knownSecrets(secrets);
  const mask = (text: string) => redactTextKnowing(text, known);
  let pending = '';
  return new Transform({
    decodeStrings: true,
    transform(chunk: Buffer, _encoding, done) {
      pending += chunk.toString('utf8');
      const end = pending.length > LINE_MAX_CHARS ? pending.length : pending.lastIndexOf('\n') + 1;
      if (end === 0) return done();
      const lines = pending.slice(0, end);
      pending = pending.slice(end);
      done(null, mask(lines));
    },
    flush(done) {
      done(null, pending === '' ? undefined : mask(pending));
    },
  });
}

/** The password of a connection URL as the child reads it (decoded), or none. */
export function urlPassword(url: string): string[] {
  try {
    const password = decodeURIComponent(new URL(url).password);
    return password ? [password] : [];
  } catch {
    return [];
  }
}
