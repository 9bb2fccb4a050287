// Seed 002's "file servers reaching sensitive directories": the one list of where credentials live under
// a home directory, shared by the gateway (which refuses to start such an upstream) and `killswitch scan`
// (which reports it). Each is relative to the home directory; the entry and anything inside it count.
export const CREDENTIAL_PATHS_UNDER_HOME: readonly string[] = [
  '.ssh',
  '.aws',
  '.gnupg',
  '.kube',
  '.docker',
  '.azure',
  '.config/gcloud',
  '.config/gh',
  '.netrc',
  '.npmrc',
  '.pgpass',
];
