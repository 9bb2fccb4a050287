import { isIP } from 'node:net';

// Whether a host name or address is this machine's loopback: the start's warning for HOST (config.ts), and
// the hosts never sent through HTTP(S)_PROXY, which cannot reach this machine's loopback (flags/http-agent.ts).

/** localhost, *.localhost, 127.0.0.0/8, ::1 and its other spellings (bracketed, written out, IPv4-mapped 127.x). */
export function isLoopbackHost(hostname: string): boolean {
  const host = hostname.replace(/^\[(.*)\]$/, '$1').replace(/\.$/, '').toLowerCase();
  if (host === 'localhost' || host.endsWith('.localhost')) return true;
  if (isIP(host) === 4) return host.startsWith('127.');
  if (isIP(host) !== 6) return false;
  // The URL parser writes an IPv6 address one way: ::1, and 127.x.y.z mapped as ::ffff:7fxx:yyzz.
  const canonical = new URL(`http://[${host}]/`).hostname;
  return canonical === '[::1]' || canonical.startsWith('[::ffff:7f');
}
