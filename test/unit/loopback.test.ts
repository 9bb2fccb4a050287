import { describe, expect, it } from 'vitest';
import { isLoopbackHost } from '../../src/loopback.js';

describe('isLoopbackHost (HOST warnings; never sent through HTTP(S)_PROXY)', () => {
  it('is true for localhost, 127.0.0.0/8 and ::1 in every spelling a URL gives', () => {
    for (const host of ['localhost', 'LOCALHOST', 'localhost.', 'unleash.localhost', '127.0.0.1', '127.1.2.3', '[::1]', '::1', '[0:0:0:0:0:0:0:1]', '[::ffff:127.0.0.1]', new URL('http://[::1]:4242').hostname]) {
      expect(isLoopbackHost(host), host).toBe(true);
    }
  });
  it('is false for every other host, however close', () => {
    for (const host of ['unleash.internal', 'localhost.example.com', '128.0.0.1', '10.0.0.1', '[::2]', '[::ffff:10.0.0.1]', 'example.com', '127.0.0.1.nip.io']) {
      expect(isLoopbackHost(host), host).toBe(false);
    }
  });
});
