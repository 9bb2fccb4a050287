// Messages are built from parts written in different places: a policy check's reason has no final
// period (gateways append to it: "…; the result was withheld"), a halt's consequence is a sentence of
// its own. Joining them by hand ran two sentences together ("…token This token is now halted").

/** `first` and `second` as two sentences: ". " between them unless `first` already ends one. */
export function joinSentences(first: string, second: string): string {
  const head = first.trimEnd();
  if (head === '') return second;
  if (second === '') return head;
  return /[.!?:;][)"'\]]*$/.test(head) ? `${head} ${second}` : `${head}. ${second}`;
}
