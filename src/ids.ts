// What counts as an id of this service's objects (tokens, sessions, decisions, kills, alerts, audit rows).

// Any 8-4-4-4-12 hex text, in either case: the ids issued are UUID v7, but an id is checked only for its
// shape (uuid's `validate` also demands a version and variant, and would refuse ids Postgres accepts).
// Upper case names the same object: whoever keeps or compares the id lower-cases it first.
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** Whether `text` has the shape of a UUID, in any case. */
export function isUuid(text: string): boolean {
  return UUID.test(text);
}
