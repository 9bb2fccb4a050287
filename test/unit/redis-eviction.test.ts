import { describe, expect, it } from 'vitest';
import { evictionRisk } from '../../src/redis/client.js';

// What the start warns about: a Redis that may evict what the gate keeps (a timed kill before it ends).

describe('evictionRisk', () => {
  it('is silent for noeviction, and when the policy could not be read', () => {
    expect(evictionRisk('noeviction')).toBeUndefined();
    expect(evictionRisk(undefined)).toBeUndefined();
  });

  it.each(['volatile-lru', 'volatile-ttl', 'allkeys-lru', 'allkeys-random'])('warns for %s, naming the setting to use', (policy) => {
    const risk = evictionRisk(policy);
    expect(risk).toContain(`maxmemory-policy is ${policy}`);
    expect(risk).toContain('Set maxmemory-policy noeviction');
  });
});
