import { describe, expect, it } from 'vitest';
import { describeRegistration, otherSecretWarning, type RegistrationRecord, registrationRecord, takeoverWarning } from '../../src/flags/registration.js';

// What a replica makes of the recorded webhook registrations (GET /v1/flags webhook.registration).

const URL_HERE = 'http://killswitch.internal:8080/v1/flags/events';
const SECRET = 'secret-of-this-installation';
const mine = { url: URL_HERE, secret: SECRET };
const raw = (r: RegistrationRecord | null) => (r ? JSON.stringify(r) : null);

describe('webhook registration as a replica sees it', () => {
  it('nothing recorded: not attempted', () => {
    expect(describeRegistration([null, null], mine)).toMatchObject({ state: 'not-attempted', at: null, registeredAt: null });
  });

  it("a success for this replica's URL and secret: registered (the URL compared as sync stores it)", () => {
    const ok = registrationRecord('start', 'http://KILLSWITCH.internal:8080/v1/flags/events', SECRET, { ok: true, result: 'created' });
    expect(describeRegistration([raw(ok), raw(ok)], mine)).toMatchObject({ state: 'registered', by: 'start', result: 'created', url: URL_HERE, sameSecret: true, registeredAt: new Date(ok.at) });
  });

  it('a success for another URL, or for this URL with another secret: elsewhere, saying which', () => {
    const moved = registrationRecord('flags sync', 'http://laptop:8080/v1/flags/events', SECRET, { ok: true, result: 'updated' });
    expect(describeRegistration([raw(moved), raw(moved)], mine)).toMatchObject({ state: 'elsewhere', by: 'flags sync', url: 'http://laptop:8080/v1/flags/events', sameSecret: true });
    const otherSecret = registrationRecord('flags sync', URL_HERE, 'a shell with another secret', { ok: true, result: 'updated' });
    expect(describeRegistration([raw(otherSecret), raw(otherSecret)], mine)).toMatchObject({ state: 'elsewhere', url: URL_HERE, sameSecret: false });
  });

  it('a failure after a success: failed, with the error, and the earlier success', () => {
    const ok = { ...registrationRecord('start', URL_HERE, SECRET, { ok: true, result: 'unchanged' }), at: Date.parse('2026-03-01T10:00:00Z') };
    const failed = registrationRecord('start', URL_HERE, SECRET, { ok: false, error: 'Unleash admin API GET /api/admin/addons answered 401' });
    expect(describeRegistration([raw(failed), raw(ok)], mine)).toMatchObject({
      state: 'failed',
      error: 'Unleash admin API GET /api/admin/addons answered 401',
      result: null,
      registeredAt: new Date('2026-03-01T10:00:00Z'),
      registeredUrl: URL_HERE,
    });
  });

  it("after an upgrade from the published default: the earlier success carries another secret, and the start's warning says to run flags sync --replace-webhook", () => {
    const old = { ...registrationRecord('start', URL_HERE, 'killswitch-dev-webhook-secret', { ok: true, result: 'unchanged' }), at: Date.parse('2026-03-01T10:00:00Z') };
    const failed = registrationRecord('start', URL_HERE, SECRET, { ok: false, error: 'Unleash admin API GET /api/admin/addons answered 403' });
    const view = describeRegistration([raw(failed), raw(old)], mine);
    expect(view).toMatchObject({ state: 'failed', registeredUrl: URL_HERE, registeredSameSecret: false });
    expect(otherSecretWarning(view, URL_HERE)).toContain(`killswitch flags sync --replace-webhook --webhook-url ${URL_HERE}`);
    // The same state for this replica's secret, or registered elsewhere with another URL: nothing to say here.
    const ok = registrationRecord('start', URL_HERE, SECRET, { ok: true, result: 'unchanged' });
    expect(describeRegistration([raw(failed), raw(ok)], mine).registeredSameSecret).toBe(true);
    expect(otherSecretWarning(describeRegistration([raw(failed), raw(ok)], mine), URL_HERE)).toBeUndefined();
    expect(otherSecretWarning(describeRegistration([raw(ok), raw(ok)], mine), URL_HERE)).toBeUndefined();
    // A shell registered this URL with another secret (the old one, say): its events are refused too.
    expect(otherSecretWarning(describeRegistration([raw(old), raw(old)], mine), URL_HERE)).toMatch(/refused \(401\)/);
  });

  it('an unreadable record counts as none', () => {
    expect(describeRegistration(['{"not":"a record"}', 'garbage'], mine)).toMatchObject({ state: 'not-attempted', registeredAt: null });
  });
});

describe('the start that takes the webhook from replicas with another secret', () => {
  const view = (r: RegistrationRecord | null) => describeRegistration([raw(r), raw(r)], mine);
  it('warns when the database stores another secret, or the webhook to this URL was registered with another one', () => {
    expect(takeoverWarning({ storedDiffers: true, before: view(null), url: URL_HERE })).toContain('differs from the webhook secret stored in the database');
    const other = registrationRecord('start', URL_HERE, 'another replica secret', { ok: true, result: 'updated' });
    expect(takeoverWarning({ storedDiffers: false, before: view(other), url: URL_HERE })).toContain(`posting to ${URL_HERE} was registered with another secret (by start on`);
  });
  it('says nothing when the registration is its own, for another URL, failed, or unreadable', () => {
    expect(takeoverWarning({ storedDiffers: false, before: view(registrationRecord('start', URL_HERE, SECRET, { ok: true, result: 'updated' })), url: URL_HERE })).toBeUndefined();
    expect(takeoverWarning({ storedDiffers: false, before: view(registrationRecord('start', 'http://other:8080/v1/flags/events', 'x', { ok: true, result: 'updated' })), url: URL_HERE })).toBeUndefined();
    expect(takeoverWarning({ storedDiffers: false, before: view(registrationRecord('start', URL_HERE, 'x', { ok: false, error: 'refused' })), url: URL_HERE })).toBeUndefined();
    expect(takeoverWarning({ storedDiffers: false, before: undefined, url: URL_HERE })).toBeUndefined();
  });
});
