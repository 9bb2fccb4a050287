// The WHERE clause of a listing built from optional filters, numbering placeholders as values are added,
// so a condition never names a $n by hand and a query can add its own values (a cursor, a LIMIT) after.

export interface Conditions {
  /** The query's values in placeholder order ($1 is args[0]): the array given to conditions(), not a copy. */
  readonly args: unknown[];
  /** The conditions so far; one that takes no value is pushed here directly. */
  readonly list: string[];
  /** Adds a condition in which every `?` stands for `value` (one placeholder, however often it appears). */
  add(sql: string, value: unknown): void;
  /** Appends a value and returns its placeholder ('$n'): for a fragment of several values, or a LIMIT. */
  arg(value: unknown): string;
  /** '' without conditions, otherwise 'WHERE a AND b'. */
  where(): string;
}

/** Conditions whose placeholders continue after the values already in `args` (which they share). */
export function conditions(args: unknown[] = []): Conditions {
  const list: string[] = [];
  const arg = (value: unknown): string => `$${args.push(value)}`;
  return {
    args,
    list,
    arg,
    add(sql, value) {
      const placeholder = arg(value);
      // A function, so that '$' sequences in the replacement are never read as patterns.
      list.push(sql.replaceAll('?', () => placeholder));
    },
    where: () => (list.length ? `WHERE ${list.join(' AND ')}` : ''),
  };
}
