// The only module that reads process.env. Every setting is declared once in SETTINGS with its type,
// default and an example, so validation, `killswitch config check` and docs/configuration.md all come
// from the same table.

import { createPrivateKey, type KeyObject, X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { createSecureContext } from 'node:tls';
import { redactText } from './audit/redact.js';
import { isLoopbackHost } from './loopback.js';
import { generateCredential, OPERATOR_PREFIX, parseCredential } from './tokens/format.js';

export type SettingType = 'string' | 'url' | 'int' | 'bool' | 'enum' | 'list';

export interface SettingSpec {
  env: string;
  type: SettingType;
  default?: string;
  example: string;
  doc: string;
  values?: readonly string[];
  min?: number;
  max?: number;
  secret?: boolean;
  /** For `url`: the schemes accepted (without the colon). Unset: any URL. */
  schemes?: readonly string[];
  /** Other names read when `env` is unset or empty, in this order (the lower-case proxy variables). */
  aliases?: readonly string[];
}

export const SETTINGS = [
  { env: 'HOST', type: 'string', default: '127.0.0.1', example: '0.0.0.0', doc: 'Address the control plane listens on. The embedded Unleash listens there too, but on 127.0.0.1 only while UNLEASH_ADMIN_TOKEN or UNLEASH_ADMIN_PASSWORD holds its published default.' },
  { env: 'PORT', type: 'int', default: '8080', example: '8080', min: 0, max: 65535, doc: 'Port of the decision API, admin API and UI.' },
  { env: 'TLS_CERT_FILE', type: 'string', default: '', example: '/etc/killswitch/tls/server.pem', doc: 'PEM certificate (its chain may follow) the API on PORT is served with over HTTPS; needs TLS_KEY_FILE. Read at start: a missing or invalid file stops the start (exit 2). Empty: plain HTTP, for loopback or behind a proxy that terminates TLS (docs/operations.md, "TLS"). METRICS_PORT stays plain HTTP.' },
  { env: 'TLS_KEY_FILE', type: 'string', default: '', example: '/etc/killswitch/tls/server-key.pem', doc: 'PEM private key (unencrypted) of TLS_CERT_FILE\'s certificate; set both or neither.' },
  { env: 'TLS_CLIENT_CA_FILE', type: 'string', default: '', example: '/etc/killswitch/tls/clients-ca.pem', doc: 'Mutual TLS: PEM certificate(s) of the CA that signs client certificates; a connection without a certificate it signed is refused during the TLS handshake, on every route of PORT (/healthz and /readyz included). Needs TLS_CERT_FILE and TLS_KEY_FILE. The Unleash webhook has no client certificate: without PUBLIC_URL it is not registered and flag changes arrive by polling (docs/operations.md, "TLS").' },
  { env: 'LOG_LEVEL', type: 'enum', default: 'info', example: 'debug', values: ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'], doc: 'pino log level.' },
  { env: 'DATABASE_URL', type: 'url', default: 'postgres://postgres@127.0.0.1:5432/killswitch', example: 'postgres://killswitch:secret@db:5432/killswitch', secret: true, doc: 'Postgres for tokens, sessions and audit. The database is created if it does not exist (the user needs CREATEDB for that). The user needs no superuser: docs/operations.md, "Managed Postgres", says what it needs and what a DBA runs.' },
  { env: 'DATABASE_POOL_SIZE', type: 'int', default: '10', example: '20', min: 1, max: 500, doc: 'Connections in the request-path pool.' },
  { env: 'REDIS_URL', type: 'url', default: 'redis://127.0.0.1:6379', example: 'redis://redis:6379/0', secret: true, doc: 'Redis (7 or later, not in cluster mode) for limits, sessions, halts and cross-replica messages: redis://[user:password@]host:port[/db], or rediss://… for TLS (a certificate from a private CA needs NODE_EXTRA_CA_CERTS=<that CA\'s PEM file>, Node\'s own variable). Each start checks that the Redis is not in cluster mode and that the user may use every command, key and channel the control plane needs, and is refused (exit 2) naming what is missing and the ACL rule that grants it: docs/operations.md, "Managed Redis".' },
  { env: 'REDIS_PREFIX', type: 'string', default: 'ks:', example: 'ks-prod:', doc: 'Prefix of every Redis key and pub/sub channel, so several installations can share one Redis.' },
  { env: 'REDIS_TIMEOUT_MS', type: 'int', default: '250', example: '100', min: 1, max: 60000, doc: 'A Redis command slower than this fails the decision closed (DEPENDENCY_UNAVAILABLE).' },
  { env: 'TOKEN_HASH_SECRET', type: 'string', example: 'a-long-random-string-of-32-or-more-characters', secret: true, doc: 'HMAC key for stored token hashes, at least 32 characters; the same value on every replica. Unset: one is generated on first start and kept in the database (fine for one installation; set it explicitly when you run several). The database records a fingerprint of the secret its credentials were hashed with (never the secret itself): a replica with another secret refuses to start (exit 2). Changing it means issuing every credential again (docs/operations.md, "Changing TOKEN_HASH_SECRET").' },
  { env: 'BOOTSTRAP_OWNER_KEY', type: 'string', example: 'ksop_...', secret: true, doc: 'Owner operator key to create on first start (a database with no operator key) instead of a generated one. Must be a well-formed operator key (ksop_ + 22 letters or digits + a 6-character checksum), such as one this product printed; anything else is refused at start. Unset: the first start generates one (its output says where to find it).' },
  { env: 'TOKEN_CACHE_TTL_MS', type: 'int', default: '5000', example: '2000', min: 0, max: 600000, doc: 'How long an authenticated credential is cached (one in use is refreshed in the background before then); revocation clears it on every replica at once.' },
  { env: 'BODY_LIMIT_BYTES', type: 'int', default: '262144', example: '1048576', min: 1024, max: 104857600, doc: 'Largest accepted request body; larger bodies get 413.' },
  {
    env: 'REQUEST_TIMEOUT_MS',
    type: 'int',
    default: '30000',
    example: '120000',
    min: 1000,
    max: 3600000,
    doc: 'How long a client may take to send one whole request, headers and body (the answer may take longer: an audit export streams for as long as it needs). A request still arriving after it gets 408 REQUEST_TIMEOUT and its connection is closed, so a slow or hostile client cannot hold connections open by trickling a body; Fastify alone sets no limit. Raise it with BODY_LIMIT_BYTES when large bodies come over slow links.',
  },
  { env: 'POLICY_FILE', type: 'string', default: 'policy/default.yaml', example: '/etc/killswitch/policy.yaml', doc: 'Policy file (YAML), reloaded when it changes. A relative path is resolved against the working directory of `killswitch start`; a file that does not exist stops the start (exit 2).' },
  { env: 'MCP_ENV', type: 'enum', default: 'development', example: 'staging', values: ['development', 'staging', 'production'], doc: 'Environment `killswitch env-gate` checks the configured MCP servers against (seed 001: MCP_ENV, default development).' },
  { env: 'APPDATA', type: 'string', default: '', example: 'C:\\Users\\me\\AppData\\Roaming', doc: 'Windows only, set by Windows: `killswitch scan` and `env-gate` look for Claude Desktop\'s config in %APPDATA%\\Claude. Empty: the home directory\'s AppData\\Roaming.' },
  { env: 'UNLEASH_URL', type: 'url', schemes: ['http', 'https'], default: '', example: 'https://unleash.internal/api', doc: 'An existing Unleash (or Unleash Edge) API URL: http(s), ending in /api, without a user name or password (refused: Unleash takes UNLEASH_API_TOKEN and UNLEASH_ADMIN_TOKEN). A URL without /api is warned about at start and by `killswitch config check` (Unleash would answer its web UI there, not flags). Empty: `killswitch start` runs an embedded unleash-server.' },
  { env: 'UNLEASH_PORT', type: 'int', default: '4242', example: '4242', min: 1, max: 65535, doc: 'Port of the embedded Unleash (UI at http://HOST:PORT).' },
  { env: 'UNLEASH_DATABASE_URL', type: 'url', default: '', example: 'postgres://unleash@db:5432/unleash', secret: true, doc: 'Database of the embedded Unleash (created if missing, which takes CREATEDB; Unleash creates its tables in its schema public); it must not be DATABASE_URL\'s database. Empty: DATABASE_URL with `_unleash` after its database name (`killswitch` → `killswitch_unleash`; the same host, port, user, password and parameters), so installations sharing a Postgres never share an Unleash.' },
  { env: 'UNLEASH_API_TOKEN', type: 'string', default: 'default:development.killswitch-backend-token', example: 'default:production.abc...', secret: true, doc: 'Backend (client) API token the control plane reads flags with. Its environment part (`project:environment.secret`) must be UNLEASH_ENVIRONMENT (or `*`): `killswitch start` and `config check` refuse another.' },
  { env: 'UNLEASH_ADMIN_TOKEN', type: 'string', default: '*:*.killswitch-admin-token', example: '*:*.abc...', secret: true, doc: 'Admin API token used by flags sync and webhook registration.' },
  { env: 'UNLEASH_ADMIN_PASSWORD', type: 'string', default: 'unleash4all', example: 'change-me', secret: true, doc: 'Password of the embedded Unleash UI user `admin` (first login).' },
  { env: 'UNLEASH_ENVIRONMENT', type: 'string', default: 'development', example: 'production', doc: 'The one Unleash environment the control plane reads.' },
  { env: 'UNLEASH_REFRESH_MS', type: 'int', default: '1000', example: '500', min: 100, max: 1000, doc: 'Flag poll interval, 100 to 1000 ms: a flag turned off in Unleash is promised to stop calls within about a second, so it cannot be longer. Kept after Unleash answers errors (no back-off).' },
  { env: 'UNLEASH_STALE_AFTER_S', type: 'int', default: '30', example: '60', min: 1, max: 86400, doc: 'Raise a staleness alert after this long without a successful fetch.' },
  { env: 'UNLEASH_BACKUP_MAX_AGE_S', type: 'int', default: '86400', example: '3600', min: 0, max: 31536000, doc: 'A flag backup (the file in DATA_DIR or the copy in Redis, whichever Unleash confirmed later) older than this is not used to start.' },
  { env: 'UNLEASH_WEBHOOK_SECRET', type: 'string', example: 'a-long-random-string', secret: true, doc: 'Shared secret on the Unleash webhook integration: Unleash sends it with every flag event, and POST /v1/flags/events refuses events without it. Unset: one is generated on first start and kept in the database, where every replica and `killswitch flags sync` (with DATABASE_URL) find it. Set it only to share one secret with something outside the database (the same value on every replica and for `flags sync`).' },
  { env: 'UNLEASH_START_WAIT_MS', type: 'int', default: '5000', example: '10000', min: 0, max: 600000, doc: 'How long a starting control plane waits for its first flags from Unleash (decisions deny until they are loaded). A flag backup is used only when no fetch has succeeded within this time.' },
  { env: 'PUBLIC_URL', type: 'url', schemes: ['http', 'https'], default: '', example: 'http://killswitch.internal:8080', doc: 'http(s) URL Unleash uses to reach the control plane webhook, without a user name or password (refused: the webhook is authenticated by UNLEASH_WEBHOOK_SECRET). Empty: http://HOST:PORT (https:// with TLS_CERT_FILE, 127.0.0.1 for a wildcard HOST).' },
  { env: 'DATA_DIR', type: 'string', default: '.killswitch', example: '/var/lib/killswitch', doc: 'Local directory of this replica: the audit spool and the halt journal (rows and halts Postgres has not taken yet: keep it on a persistent volume), the flag backup, and the owner key of the first start (owner-key, until you delete it). docs/operations.md, "Backup and restore".' },
  { env: 'AUDIT_BATCH_MAX', type: 'int', default: '500', example: '1000', min: 1, max: 10000, doc: 'Most audit rows in one group-committed INSERT.' },
  { env: 'AUDIT_RETENTION_DAYS', type: 'int', default: '90', example: '365', min: 1, max: 36500, doc: 'Raw audit rows are removed by whole months once their month is entirely older than this: kept at least this many days and at most about 31 more (monthly rollups are kept).' },
  { env: 'AUDIT_HEAD_LOG_INTERVAL_S', type: 'int', default: '60', example: '300', min: 0, max: 86400, doc: 'How often each replica logs `audit chain head` (its chain\'s last row in Postgres: replica_id:seq:hash) when it moved, and once at shutdown: a record outside the database that `killswitch audit verify --expect` checks, to detect rows removed from a chain\'s end or a rewritten chain. 0: off.' },
  { env: 'RECORDS_RETENTION_DAYS', type: 'int', default: '90', example: '365', min: 0, max: 36500, doc: 'Alerts, settled approval requests (rejected, expired, used), halts resumed and closed sessions older than this are removed by an hourly job. Pending and approved requests, halts in force, active and halted sessions, and sessions a remaining halt names are never removed; the audit trail keeps the events. 0: keep them forever.' },
  { env: 'GRANT_MAX_SECONDS', type: 'int', default: '28800', example: '3600', min: 60, max: 604800, doc: 'Longest production grant an operator may issue.' },
  { env: 'APPROVAL_TTL_S', type: 'int', default: '900', example: '300', min: 10, max: 86400, doc: 'How long an approval request waits for a human, and how long an approved call may then run once (a policy rule may set its own `ttl_seconds`).' },
  { env: 'APPROVAL_MAX_PENDING_PER_TOKEN', type: 'int', default: '20', example: '5', min: 0, max: 10000, doc: 'Approval requests one agent token may have waiting at once; more answer RATE_LIMITED (0: no cap).' },
  { env: 'SESSION_IDLE_TIMEOUT_S', type: 'int', default: '3600', example: '900', min: 10, max: 604800, doc: 'A session with no allowed call for this long closes: denied calls do not keep it open (a halted session never closes by itself).' },
  { env: 'SESSION_MAX_OPEN_PER_TOKEN', type: 'int', default: '20', example: '5', min: 0, max: 100000, doc: 'Open sessions per agent token when the policy names no limit (0: none).' },
  { env: 'SESSION_MAX_NEW_PER_HOUR', type: 'int', default: '60', example: '30', min: 0, max: 1000000, doc: 'Sessions an agent token may open per hour when the policy names no limit (0: none).' },
  { env: 'TOOL_REPORTS_MAX_PER_MINUTE', type: 'int', default: '60', example: '120', min: 0, max: 1000000, doc: 'Tool reports (POST /v1/gateway/tools: a gateway\'s tools/list, resources/list, prompts/list) an agent token may make per minute when the policy names no limit (`rate_limits.per_token.max_tool_reports_per_minute`); more answer 429 TOO_MANY_TOOL_REPORTS (0: none).' },
  { env: 'DECISION_META_TTL_S', type: 'int', default: '3600', example: '86400', min: 60, max: 604800, doc: 'How long after an allow the gateway can report its result (POST /v1/decisions/:id/result). Once a result is recorded, the decision is kept 5 minutes more (at most this long) for a retry of that report. Sets most of Redis\'s memory: docs/operations.md, "Sizing".' },
  { env: 'ALERT_WEBHOOK_URL', type: 'string', default: '', example: 'https://hooks.slack.com/services/T000/B000/XXXX', secret: true, doc: 'Outgoing alert webhook (http or https, without a user name or password: fetch refuses one). Empty: alerts are only stored, listed and streamed.' },
  { env: 'ALERT_WEBHOOK_FORMAT', type: 'enum', default: 'generic', example: 'slack', values: ['generic', 'slack'], doc: 'Body of the alert webhook: generic JSON, or a Slack incoming-webhook body ({text, blocks}).' },
  { env: 'ALERT_WEBHOOK_ATTEMPTS', type: 'int', default: '3', example: '5', min: 1, max: 10, doc: 'Delivery attempts per alert, including the first.' },
  { env: 'ALERT_WEBHOOK_TIMEOUT_MS', type: 'int', default: '5000', example: '2000', min: 100, max: 60000, doc: 'Timeout of one webhook attempt.' },
  { env: 'ALERT_WEBHOOK_BACKOFF_MS', type: 'int', default: '1000', example: '500', min: 0, max: 60000, doc: 'Wait before the first retry; doubled for each further retry.' },
  { env: 'ALERT_WEBHOOK_MIN_SEVERITY', type: 'enum', default: 'info', example: 'warning', values: ['info', 'warning', 'critical'], doc: 'Alerts below this severity are not sent to the webhook (they are still stored and streamed).' },
  { env: 'ALERT_WEBHOOK_SECRET', type: 'string', example: 'a-long-random-string', secret: true, doc: 'When set, generic webhook bodies carry X-Killswitch-Signature: sha256=HMAC(secret, timestamp + "." + body).' },
  { env: 'HTTPS_PROXY', aliases: ['https_proxy'], type: 'string', default: '', example: 'http://proxy.internal:3128', secret: true, doc: "Proxy the alert webhook's and the flags sync's https:// requests go through (as curl reads it; https_proxy too); unleash-client reads it itself for the flag polls and metrics. A loopback destination is always reached directly. Empty: direct." },
  { env: 'HTTP_PROXY', aliases: ['http_proxy'], type: 'string', default: '', example: 'http://proxy.internal:3128', secret: true, doc: "Proxy the alert webhook's and the flags sync's http:// requests go through (http_proxy too); as HTTPS_PROXY otherwise. Empty: direct." },
  { env: 'NO_PROXY', aliases: ['no_proxy'], type: 'string', default: '', example: '.internal,hooks.example.com:8443', doc: 'Hosts, domains (.internal: it and every host under it) and host:port pairs reached without HTTP_PROXY/HTTPS_PROXY, comma-separated (no address ranges); `*`: nothing through the proxy. Loopback addresses are always direct.' },
  { env: 'KILLSWITCH_URL', type: 'url', default: 'http://127.0.0.1:8080', example: 'https://killswitch.internal', doc: 'Control plane the operator CLI commands (`killswitch kill`, `kills`, `unkill`, `status`, `revoke`, `resume`, `audit search`) talk to, and `killswitch gateway` when its config file has no `killswitch.url` (docs/gateway.md). An https:// URL whose certificate a private CA issued needs NODE_EXTRA_CA_CERTS=<that CA\'s PEM file> (Node\'s own variable).' },
  { env: 'KILLSWITCH_OPERATOR_KEY', type: 'string', example: 'ksop_...', secret: true, doc: 'Operator key the operator CLI commands authenticate with: a viewer key is enough for `status`, `kills` and `audit search`; `kill`, `unkill`, `revoke` and `resume` need role operator or owner.' },
  { env: 'KILLSWITCH_CLIENT_CERT_FILE', type: 'string', default: '', example: '/etc/killswitch/tls/operator.pem', doc: 'Operator CLI commands (`killswitch kill`, `kills`, `unkill`, `status`, `revoke`, `resume`, `audit search`): PEM client certificate presented to a control plane that requires mutual TLS (its TLS_CLIENT_CA_FILE signed it), with KILLSWITCH_CLIENT_KEY_FILE; set both or neither. Only over an https:// KILLSWITCH_URL. Read by each command: a missing, invalid or mismatched file stops it (exit 2) before any request. The Docker image\'s health check presents the same pair to its own container under mutual TLS.' },
  { env: 'KILLSWITCH_CLIENT_KEY_FILE', type: 'string', default: '', example: '/etc/killswitch/tls/operator-key.pem', doc: 'PEM private key (unencrypted) of KILLSWITCH_CLIENT_CERT_FILE\'s certificate.' },
  { env: 'KILLSWITCH_GATEWAY_KEY', type: 'string', example: 'ksgw_...', secret: true, doc: '`killswitch gateway` only: the gateway key (issued at POST /v1/gateway-keys) it authenticates to the control plane with, when its config file has no `killswitch.gatewayKey` (docs/gateway.md). Without either, the gateway does not start.' },
  { env: 'KILLSWITCH_AGENT_TOKEN', type: 'string', example: 'mcp_rw_...', secret: true, doc: '`killswitch gateway` only: the agent token of the agent on stdio, when its config file has no `killswitch.agentToken` (docs/gateway.md). Over Streamable HTTP each agent sends its own token instead.' },
  { env: 'METRICS_PORT', type: 'int', example: '9464', min: 0, max: 65535, doc: 'When set, GET /metrics is also served without a key on this separate port (bind it to a network only Prometheus reaches), over plain HTTP even with TLS_CERT_FILE. Unset: /metrics only on PORT, with an operator key (viewer, not project-limited).' },
  { env: 'TRUST_PROXY', type: 'list', default: '', example: '10.0.0.0/8,127.0.0.1', doc: 'Addresses or CIDR ranges of the load balancers / reverse proxies in front of the control plane (also `loopback`, `linklocal`, `uniquelocal`), comma-separated. A request from one of them is taken to come from the address its X-Forwarded-For names, which audit rows record as `ip`. Empty: X-Forwarded-For is ignored and `ip` is the connection\'s peer.' },
  { env: 'METRICS_HOST', type: 'string', default: '', example: '0.0.0.0', doc: 'Address the METRICS_PORT listener binds. Empty: the same as HOST.' },
  { env: 'WORKERS', type: 'int', default: '1', example: '4', min: 0, max: 64, doc: 'Processes serving the API on this machine (node:cluster, one shared port): each is a replica with its own audit chain. 1: one process, no cluster. 0: one per CPU. `killswitch start` runs the embedded Unleash and the flags sync once, in the primary.' },
  { env: 'WORKER_HANG_TIMEOUT_MS', type: 'int', default: '10000', example: '30000', min: 1000, max: 600000, doc: 'With WORKERS > 1: a worker whose event loop has not answered the primary\'s heartbeat (once a second) for this long is hung; the primary kills it (SIGKILL) and starts another, so its share of connections stops timing out.' },
  { env: 'SHUTDOWN_TIMEOUT_MS', type: 'int', default: '25000', example: '10000', min: 0, max: 600000, doc: 'On SIGTERM/SIGINT, how long in-flight requests may take to finish before their connections are cut; the audit trail is flushed either way. A second signal exits at once.' },
  { env: 'OTEL_TRACES_EXPORTER', type: 'enum', default: 'none', example: 'otlp', values: ['none', 'otlp', 'console'], doc: 'OpenTelemetry tracing (a span per decision and per pipeline step). Off by default (unlike the OpenTelemetry default of otlp): set otlp to send spans over OTLP/HTTP.' },
  { env: 'OTEL_SDK_DISABLED', type: 'bool', default: 'false', example: 'true', doc: 'true turns tracing off whatever OTEL_TRACES_EXPORTER says.' },
  { env: 'OTEL_SERVICE_NAME', type: 'string', default: 'killswitch-control-plane', example: 'killswitch-prod', doc: 'service.name of the spans.' },
  { env: 'OTEL_RESOURCE_ATTRIBUTES', type: 'string', default: '', example: 'deployment.environment=production,service.namespace=platform', doc: 'Extra resource attributes of the spans, key=value pairs separated by commas.' },
  { env: 'OTEL_EXPORTER_OTLP_ENDPOINT', type: 'string', default: '', example: 'http://otel-collector:4318', doc: 'OTLP/HTTP base URL; spans go to <URL>/v1/traces. Empty: http://localhost:4318.' },
  { env: 'OTEL_EXPORTER_OTLP_TRACES_ENDPOINT', type: 'string', default: '', example: 'http://otel-collector:4318/v1/traces', doc: 'Full OTLP/HTTP URL for spans; overrides OTEL_EXPORTER_OTLP_ENDPOINT.' },
  { env: 'OTEL_EXPORTER_OTLP_HEADERS', type: 'string', default: '', example: 'authorization=Bearer abc', secret: true, doc: 'Headers sent with every OTLP request, key=value pairs separated by commas.' },
  { env: 'OTEL_TRACES_SAMPLER', type: 'enum', default: 'parentbased_always_on', example: 'traceidratio', values: ['always_on', 'always_off', 'traceidratio', 'parentbased_always_on', 'parentbased_always_off', 'parentbased_traceidratio'], doc: 'Which decisions are traced.' },
  { env: 'OTEL_TRACES_SAMPLER_ARG', type: 'string', default: '', example: '0.01', doc: 'Ratio (0 to 1) of the traceidratio samplers. Empty: 1.' },
] as const satisfies readonly SettingSpec[];

export interface Config {
  host: string;
  port: number;
  tlsCertFile: string;
  tlsKeyFile: string;
  tlsClientCaFile: string;
  logLevel: string;
  databaseUrl: string;
  databasePoolSize: number;
  redisUrl: string;
  redisPrefix: string;
  redisTimeoutMs: number;
  tokenHashSecret: string | undefined;
  bootstrapOwnerKey: string | undefined;
  tokenCacheTtlMs: number;
  bodyLimitBytes: number;
  requestTimeoutMs: number;
  policyFile: string;
  mcpEnv: 'development' | 'staging' | 'production';
  appdata: string;
  unleashUrl: string;
  unleashPort: number;
  unleashDatabaseUrl: string;
  unleashApiToken: string;
  unleashAdminToken: string;
  unleashAdminPassword: string;
  unleashEnvironment: string;
  unleashRefreshMs: number;
  unleashStaleAfterS: number;
  unleashBackupMaxAgeS: number;
  unleashWebhookSecret: string | undefined;
  unleashStartWaitMs: number;
  publicUrl: string;
  dataDir: string;
  auditBatchMax: number;
  auditRetentionDays: number;
  auditHeadLogIntervalS: number;
  recordsRetentionDays: number;
  grantMaxSeconds: number;
  approvalTtlS: number;
  approvalMaxPendingPerToken: number;
  sessionIdleTimeoutS: number;
  sessionMaxOpenPerToken: number;
  sessionMaxNewPerHour: number;
  toolReportsMaxPerMinute: number;
  decisionMetaTtlS: number;
  alertWebhookUrl: string;
  alertWebhookFormat: 'generic' | 'slack';
  alertWebhookAttempts: number;
  alertWebhookTimeoutMs: number;
  alertWebhookBackoffMs: number;
  alertWebhookMinSeverity: 'info' | 'warning' | 'critical';
  alertWebhookSecret: string | undefined;
  httpsProxy: string;
  httpProxy: string;
  noProxy: string;
  killswitchUrl: string;
  killswitchOperatorKey: string | undefined;
  killswitchClientCertFile: string;
  killswitchClientKeyFile: string;
  killswitchGatewayKey: string | undefined;
  killswitchAgentToken: string | undefined;
  metricsPort: number | undefined;
  metricsHost: string;
  trustProxy: string[];
  workers: number;
  workerHangTimeoutMs: number;
  shutdownTimeoutMs: number;
  otelTracesExporter: 'none' | 'otlp' | 'console';
  otelSdkDisabled: boolean;
  otelServiceName: string;
  otelResourceAttributes: string;
  otelExporterOtlpEndpoint: string;
  otelExporterOtlpTracesEndpoint: string;
  otelExporterOtlpHeaders: string;
  otelTracesSampler: 'always_on' | 'always_off' | 'traceidratio' | 'parentbased_always_on' | 'parentbased_always_off' | 'parentbased_traceidratio';
  otelTracesSamplerArg: string;
}

export class ConfigError extends Error {
  constructor(
    readonly variable: string,
    message: string,
  ) {
    super(message);
    this.name = 'ConfigError';
  }
}

type Env = Record<string, string | undefined>;

function parseValue(spec: SettingSpec, raw: string): string | number | boolean | string[] {
  const fail = (why: string): never => {
    // A setting that is not a secret may still be given one by mistake (a URL's password): masked as in the audit trail.
    throw new ConfigError(spec.env, `${spec.env}=${spec.secret ? '(hidden)' : JSON.stringify(redactText(raw))} is invalid: ${why}. Example: ${spec.env}=${spec.example}`);
  };
  switch (spec.type) {
    case 'int': {
      if (!/^-?\d+$/.test(raw.trim())) fail('expected a whole number');
      const n = Number(raw);
      if (spec.min !== undefined && n < spec.min) fail(`must be at least ${spec.min}`);
      if (spec.max !== undefined && n > spec.max) fail(`must be at most ${spec.max}`);
      return n;
    }
    case 'bool':
      if (!/^(true|false|1|0)$/i.test(raw)) fail('expected true or false');
      return /^(true|1)$/i.test(raw);
    case 'enum':
      if (!spec.values?.includes(raw)) fail(`expected one of ${spec.values?.join(', ')}`);
      return raw;
    case 'url': {
      const url = parsedUrl(raw);
      if (!url) fail(spec.schemes ? `expected ${describeSchemes(spec.schemes)} URL` : 'expected a URL');
      // `host:4242` parses as a URL of scheme `host:`, which no client here can use.
      if (spec.schemes && (!spec.schemes.includes(url!.protocol.slice(0, -1)) || url!.hostname === '')) fail(`expected ${describeSchemes(spec.schemes)} URL`);
      // These URLs are logged and printed as they are (UNLEASH_URL by the flags service and `config check`),
      // and fetch refuses a URL with credentials anyway: Unleash takes its tokens, the webhook its secret.
      if (spec.schemes && (url!.username || url!.password)) {
        throw new ConfigError(spec.env, `${spec.env} holds a user name or password (${url!.protocol}//***@${url!.host}): remove them. Example: ${spec.env}=${spec.example}`);
      }
      return raw;
    }
    case 'list':
      return raw
        .split(',')
        .map((s) => s.trim())
        .filter(Boolean);
    default:
      return raw;
  }
}

function camel(env: string): string {
  return env.toLowerCase().replace(/_([a-z0-9])/g, (_m, c: string) => c.toUpperCase());
}

/** Reads and validates the configuration. Throws ConfigError naming the first bad variable. */
export function loadConfig(env: Env = process.env, overrides: Partial<Config> = {}): Config {
  const out: Record<string, unknown> = {};
  for (const spec of SETTINGS as readonly SettingSpec[]) {
    const raw = [spec.env, ...(spec.aliases ?? [])].map((name) => env[name]).find((v) => v !== undefined && v !== '');
    const value = raw !== undefined ? raw : spec.default;
    // An empty default of a URL setting means "not set" (UNLEASH_URL: embedded; PUBLIC_URL: http://HOST:PORT).
    out[camel(spec.env)] = value === undefined ? undefined : value === '' && spec.type === 'url' ? '' : parseValue(spec, value);
  }
  const config = { ...(out as unknown as Config), ...overrides };
  // Derived, not a fixed default: a DATABASE_URL with another host or credentials would otherwise leave
  // the embedded Unleash trying postgres@127.0.0.1 without a password.
  if (!config.unleashDatabaseUrl) config.unleashDatabaseUrl = withDatabaseName(config.databaseUrl, embeddedUnleashDatabase(config.databaseUrl));
  if (config.tokenHashSecret !== undefined && config.tokenHashSecret.length < 32) {
    throw new ConfigError('TOKEN_HASH_SECRET', 'TOKEN_HASH_SECRET must be at least 32 characters. Example: TOKEN_HASH_SECRET=$(openssl rand -base64 48)');
  }
  const ownerKeyProblem = bootstrapOwnerKeyProblem(config.bootstrapOwnerKey);
  if (ownerKeyProblem) throw new ConfigError('BOOTSTRAP_OWNER_KEY', ownerKeyProblem);
  // Checked as fetch reads it: fetch refuses a URL it cannot parse or with a user name or password in an
  // error that quotes the whole URL (Slack's holds its secret in the path), logged with each failed delivery.
  const hookUrl = config.alertWebhookUrl ? parsedUrl(config.alertWebhookUrl) : undefined;
  if (config.alertWebhookUrl && (!/^https?:\/\/[^/\s]+/i.test(config.alertWebhookUrl) || !hookUrl || hookUrl.username || hookUrl.password)) {
    throw new ConfigError('ALERT_WEBHOOK_URL', 'ALERT_WEBHOOK_URL=(hidden) is invalid: expected an http(s) URL without a user name or password. Example: ALERT_WEBHOOK_URL=https://hooks.slack.com/services/T000/B000/XXXX');
  }
  if (config.metricsPort !== undefined && config.metricsPort !== 0 && config.metricsPort === config.port) {
    throw new ConfigError('METRICS_PORT', `METRICS_PORT=${config.metricsPort} is invalid: it must differ from PORT (the keyless metrics listener is a second port). Example: METRICS_PORT=9464`);
  }
  const untrusted = config.trustProxy.find((entry) => !isProxyAddress(entry));
  if (untrusted !== undefined) {
    throw new ConfigError('TRUST_PROXY', `TRUST_PROXY names ${JSON.stringify(untrusted)}, which is neither an IP address, a CIDR range nor loopback, linklocal or uniquelocal. Example: TRUST_PROXY=10.0.0.0/8,127.0.0.1`);
  }
  checkTracingSettings(config);
  return config;
}

/** One TRUST_PROXY entry: an address, a CIDR range, or one of proxy-addr's named ranges. */
function isProxyAddress(entry: string): boolean {
  if (entry === 'loopback' || entry === 'linklocal' || entry === 'uniquelocal') return true;
  const [address, bits, extra] = entry.split('/');
  const family = isIP(address ?? '');
  if (family === 0 || extra !== undefined) return false;
  if (bits === undefined) return true;
  const n = Number(bits);
  return /^\d{1,3}$/.test(bits) && n <= (family === 4 ? 32 : 128);
}

/**
 * The database the embedded Unleash uses on DATABASE_URL's server when UNLEASH_DATABASE_URL is empty:
 * DATABASE_URL's own name with `_unleash` (`killswitch` → `killswitch_unleash`), so two installations on
 * one Postgres never share an Unleash (turning a flag off for one would stop the other). Cut so that it
 * stays within Postgres's 63-byte names.
 */
export function embeddedUnleashDatabase(databaseUrl: string): string {
  let name = 'killswitch';
  try {
    name = decodeURIComponent(new URL(databaseUrl).pathname.slice(1)) || name;
  } catch {
    // A malformed DATABASE_URL is reported by its own check.
  }
  while (Buffer.byteLength(name) > 55) name = [...name].slice(0, -1).join('');
  return `${name}_unleash`;
}

/** A Postgres URL with another database name; host, port, user, password and query parameters kept. */
export function withDatabaseName(databaseUrl: string, database: string): string {
  const url = new URL(databaseUrl);
  url.pathname = `/${encodeURIComponent(database)}`;
  return url.toString();
}

/**
 * Why BOOTSTRAP_OWNER_KEY cannot be the first owner's key; undefined when it can. A malformed value used
 * to be stored as given, and then every use of it was refused (401): the owner was locked out.
 */
function bootstrapOwnerKeyProblem(key: string | undefined): string | undefined {
  if (key === undefined || parseCredential(key)?.kind === 'operator') return undefined;
  const kind = parseCredential(key)?.kind;
  // Measured on a real key, so the message cannot drift from src/tokens/format.ts.
  const rest = generateCredential(OPERATOR_PREFIX).length - OPERATOR_PREFIX.length;
  const why =
    kind === 'gateway'
      ? 'it is a gateway key (ksgw_), not an operator key'
      : kind === 'agent'
        ? 'it is an agent token (mcp_), not an operator key'
        : !key.startsWith(OPERATOR_PREFIX)
          ? `it does not start with ${OPERATOR_PREFIX}`
          : `after ${OPERATOR_PREFIX} it is not ${rest} letters and digits ending in a valid checksum (mistyped, truncated, or not made by this product)`;
  return (
    `BOOTSTRAP_OWNER_KEY=(hidden) is invalid: ${why}, so the owner key made from it would never authenticate. ` +
    `A valid one is an operator key as this product prints it: ${OPERATOR_PREFIX} followed by ${rest} letters and digits, the last 6 a checksum of the rest (docs/tokens.md, "Token format"); it cannot be made up by hand. ` +
    'Leave BOOTSTRAP_OWNER_KEY unset: the first start then generates a working owner key itself (its output says where to find it).'
  );
}

/**
 * Checks between settings that only a starting control plane depends on: run by `killswitch start` and
 * `killswitch config check` before anything connects, and by buildApp. Not part of loadConfig, which every
 * command runs: `flags sync` from an operator's shell (admin token only) or `killswitch kill` in a shell
 * with part of the control plane's environment must not be refused for a setting they do not use.
 */
export function checkStartConfig(config: Config): void {
  // Unleash's migrations would create their tables (settings, users ...) among the control plane's.
  if (config.unleashUrl === '' && sameDatabase(config.databaseUrl, config.unleashDatabaseUrl)) {
    throw new ConfigError(
      'UNLEASH_DATABASE_URL',
      `UNLEASH_DATABASE_URL names the same database as DATABASE_URL: the embedded Unleash needs a database of its own (empty, it is DATABASE_URL's with the database name followed by _unleash). Example: UNLEASH_DATABASE_URL=postgres://killswitch:secret@db:5432/unleash`,
    );
  }
  // A backend token is bound to one Unleash environment; Unleash serves that one whatever we ask for.
  const tokenEnvironment = /^[^:]+:([^.]+)\./.exec(config.unleashApiToken)?.[1];
  if (tokenEnvironment && tokenEnvironment !== '*' && tokenEnvironment !== config.unleashEnvironment) {
    throw new ConfigError(
      'UNLEASH_API_TOKEN',
      `UNLEASH_API_TOKEN is for Unleash environment "${tokenEnvironment}" but UNLEASH_ENVIRONMENT=${config.unleashEnvironment}: flags would be read from the wrong environment. Example: UNLEASH_API_TOKEN=default:${config.unleashEnvironment}.<secret>`,
    );
  }
  // The files are read here too, so `config check` finds a missing or mismatched one before a start does.
  serverTlsOptions(config);
}

/** What Fastify's `https` option gets: the API's certificate and key, and for mutual TLS the client CA. */
export interface ServerTlsOptions {
  cert: Buffer;
  key: Buffer;
  /** TLS_CLIENT_CA_FILE's certificates: only clients with a certificate they signed complete the handshake. */
  ca?: Buffer;
  requestCert: boolean;
  rejectUnauthorized: boolean;
}

type TlsSettings = Pick<Config, 'tlsCertFile' | 'tlsKeyFile' | 'tlsClientCaFile'>;

/**
 * TLS_CERT_FILE, TLS_KEY_FILE and TLS_CLIENT_CA_FILE read and checked: undefined when TLS is off (plain
 * HTTP). Throws ConfigError naming the setting and the path at fault: one of the pair missing, a file that
 * cannot be read or holds no PEM certificate / key, a key that is not the certificate's. Read once at start:
 * a renewed certificate takes effect at the next restart.
 */
export function serverTlsOptions(config: TlsSettings): ServerTlsOptions | undefined {
  const { tlsCertFile: certFile, tlsKeyFile: keyFile, tlsClientCaFile: caFile } = config;
  if (!certFile && !keyFile) {
    if (caFile) throw new ConfigError('TLS_CLIENT_CA_FILE', `TLS_CLIENT_CA_FILE is set but TLS_CERT_FILE and TLS_KEY_FILE are not: mutual TLS needs the API served over HTTPS with a certificate and key of its own. Example: TLS_CERT_FILE=${settingExample('TLS_CERT_FILE')} TLS_KEY_FILE=${settingExample('TLS_KEY_FILE')}`);
    return undefined;
  }
  if (!keyFile) throw new ConfigError('TLS_KEY_FILE', `TLS_CERT_FILE is set but TLS_KEY_FILE is not: HTTPS needs both the certificate and its private key (PEM files); set both or neither. Example: TLS_KEY_FILE=${settingExample('TLS_KEY_FILE')}`);
  if (!certFile) throw new ConfigError('TLS_CERT_FILE', `TLS_KEY_FILE is set but TLS_CERT_FILE is not: HTTPS needs both the certificate and its private key (PEM files); set both or neither. Example: TLS_CERT_FILE=${settingExample('TLS_CERT_FILE')}`);
  const fail = (env: string, path: string, problem: string): never => {
    throw new ConfigError(env, `${env}=${path}: ${problem}. Example: ${env}=${settingExample(env)}`);
  };
  const cert = readPemFile(certFile, 'certificate');
  if ('problem' in cert) return fail('TLS_CERT_FILE', certFile, cert.problem);
  const key = readPemFile(keyFile, 'private key');
  if ('problem' in key) return fail('TLS_KEY_FILE', keyFile, key.problem);
  if (!cert.certificates[0]!.checkPrivateKey(key.key)) fail('TLS_KEY_FILE', keyFile, `not the private key of the certificate in TLS_CERT_FILE (${certFile}, ${cert.certificates[0]!.subject.replace(/\n/g, ', ')})`);
  const options: ServerTlsOptions = { cert: cert.pem, key: key.pem, requestCert: false, rejectUnauthorized: false };
  if (caFile) {
    const ca = readPemFile(caFile, 'certificate');
    if ('problem' in ca) return fail('TLS_CLIENT_CA_FILE', caFile, ca.problem);
    Object.assign(options, { ca: ca.pem, requestCert: true, rejectUnauthorized: true });
  }
  try {
    createSecureContext(options);
  } catch (err) {
    fail('TLS_CERT_FILE', certFile, `Node cannot serve HTTPS with it and TLS_KEY_FILE=${keyFile}${caFile ? ` and TLS_CLIENT_CA_FILE=${caFile}` : ''} (${(err as Error).message})`);
  }
  return options;
}

const PEM_CERTIFICATE = /-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/g;

/**
 * A PEM file read and parsed: every certificate of a certificate file (a chain or a CA bundle), or the
 * private key of a key file; `problem`, in words, when it cannot be read or holds none. Also for the
 * gateway's `killswitch.tls` files (src/gateway/config.ts).
 */
export function readPemFile(path: string, kind: 'certificate'): { pem: Buffer; certificates: X509Certificate[] } | { problem: string };
export function readPemFile(path: string, kind: 'private key'): { pem: Buffer; key: KeyObject } | { problem: string };
export function readPemFile(path: string, kind: 'certificate' | 'private key'): { pem: Buffer; certificates?: X509Certificate[]; key?: KeyObject } | { problem: string } {
  let pem: Buffer;
  try {
    pem = readFileSync(path);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    return { problem: `cannot read the file (${code === 'ENOENT' ? 'ENOENT: no such file' : code === 'EACCES' ? 'EACCES: permission denied' : (code ?? (err as Error).message)})` };
  }
  if (kind === 'private key') {
    try {
      return { pem, key: createPrivateKey(pem) };
    } catch (err) {
      return { problem: `not an unencrypted PEM private key (${(err as Error).message})` };
    }
  }
  const blocks = pem.toString('utf8').match(PEM_CERTIFICATE) ?? [];
  if (blocks.length === 0) return { problem: 'holds no PEM certificate (-----BEGIN CERTIFICATE-----)' };
  try {
    return { pem, certificates: blocks.map((b) => new X509Certificate(b)) };
  } catch (err) {
    return { problem: `holds a PEM certificate that cannot be parsed (${(err as Error).message})` };
  }
}

/**
 * Values that are accepted but almost certainly wrong, one message each: printed by `killswitch start`
 * and `killswitch config check` (exit 0 still), since a reverse proxy may serve Unleash's API elsewhere.
 */
export function configWarnings(config: Config): string[] {
  const warnings: string[] = [];
  const url = config.unleashUrl === '' ? undefined : parsedUrl(config.unleashUrl);
  if (url) {
    // Shown as given, unless it carries credentials.
    const shown = url.username || url.password ? Object.assign(new URL(url.href), { username: '', password: '' }).toString() : config.unleashUrl;
    url.username = '';
    url.password = '';
    if (!/\/api\/?$/.test(url.pathname)) {
      url.pathname = `${url.pathname.replace(/\/+$/, '')}/api`;
      warnings.push(
        `UNLEASH_URL=${shown} does not end in /api: the control plane polls <UNLEASH_URL>/client/features and flags sync calls <UNLEASH_URL>/admin/..., which Unleash and Unleash Edge serve under /api; elsewhere they answer the web UI (flags never load: "Unexpected token '<'", or 403 "Unleash refuses UNLEASH_API_TOKEN"). Expected: UNLEASH_URL=${url.toString()}`,
      );
    }
  }
  return warnings;
}

/** Whether two Postgres URLs name one database: same host, port and database name (credentials aside). */
function sameDatabase(a: string, b: string): boolean {
  const [x, y] = [parsedUrl(a), parsedUrl(b)];
  if (!x || !y) return false;
  const key = (u: URL) => `${u.hostname.toLowerCase()}:${u.port || '5432'}/${decodeURIComponent(u.pathname.replace(/^\//, ''))}`;
  return key(x) === key(y);
}

function describeSchemes(schemes: readonly string[]): string {
  return schemes.join() === 'http,https' ? 'an http(s)' : `a ${schemes.join(' or ')}`;
}

function parsedUrl(raw: string): URL | undefined {
  try {
    return new URL(raw);
  } catch {
    return undefined;
  }
}

/** The OTEL_* values our own parser cannot check by type: URLs, key=value lists, the sampler ratio. */
function checkTracingSettings(config: Config): void {
  for (const [env, value] of [
    ['OTEL_EXPORTER_OTLP_ENDPOINT', config.otelExporterOtlpEndpoint],
    ['OTEL_EXPORTER_OTLP_TRACES_ENDPOINT', config.otelExporterOtlpTracesEndpoint],
  ] as const) {
    if (value && !/^https?:\/\/[^/\s]+/i.test(value)) throw new ConfigError(env, `${env}=${JSON.stringify(redactText(value))} is invalid: expected an http(s) URL. Example: ${env}=http://otel-collector:4318`);
  }
  for (const [env, value, secret] of [
    ['OTEL_RESOURCE_ATTRIBUTES', config.otelResourceAttributes, false],
    ['OTEL_EXPORTER_OTLP_HEADERS', config.otelExporterOtlpHeaders, true],
  ] as const) {
    if (value && parseKeyValueList(value) === undefined) {
      throw new ConfigError(env, `${env}=${secret ? '(hidden)' : JSON.stringify(value)} is invalid: expected key=value pairs separated by commas. Example: ${env}=key1=value1,key2=value2`);
    }
  }
  const arg = config.otelTracesSamplerArg;
  if (arg !== '' && !(/^\s*(0|1|0?\.\d+|1\.0*)\s*$/.test(arg))) {
    throw new ConfigError('OTEL_TRACES_SAMPLER_ARG', `OTEL_TRACES_SAMPLER_ARG=${JSON.stringify(arg)} is invalid: expected a ratio between 0 and 1. Example: OTEL_TRACES_SAMPLER_ARG=0.01`);
  }
}

/** `k1=v1,k2=v2` (OTEL_RESOURCE_ATTRIBUTES, OTEL_EXPORTER_OTLP_HEADERS; values may be percent-encoded). Undefined when malformed. */
/**
 * UNLEASH_WEBHOOK_SECRET's default until 2026-12, published in the docs and docker-compose.yml. No longer a
 * default; a webhook in Unleash that still carries it is reported with the command that replaces it.
 */
export const PUBLISHED_WEBHOOK_SECRET = 'killswitch-dev-webhook-secret';

/**
 * Secrets whose default is a published value (fine on one machine) still in force, when the control
 * plane (and the embedded Unleash, which binds the same HOST) is reachable from other hosts: anyone
 * who can reach the ports could then log in to Unleash and turn a flag back on, or (UNLEASH_WEBHOOK_SECRET
 * set to its old published default) forge the webhook.
 * Empty when HOST is a loopback address.
 */
export function wellKnownSecretsInUse(config: Config): string[] {
  if (isLoopbackHost(config.host)) return [];
  const defaults = new Map<string, string | undefined>(SETTINGS.map((s) => [s.env, 'default' in s ? s.default : undefined]));
  const inUse: string[] = [];
  const check = (env: string, value: string | undefined) => {
    if (value !== undefined && value === defaults.get(env)) inUse.push(env);
  };
  check('UNLEASH_API_TOKEN', config.unleashApiToken);
  check('UNLEASH_ADMIN_TOKEN', config.unleashAdminToken);
  // No default any more (a generated one is stored in the database), but an environment may still set the old one.
  if (config.unleashWebhookSecret === PUBLISHED_WEBHOOK_SECRET) inUse.push('UNLEASH_WEBHOOK_SECRET');
  // The password only matters for the embedded Unleash; an external one has its own users.
  if (config.unleashUrl === '') check('UNLEASH_ADMIN_PASSWORD', config.unleashAdminPassword);
  // docker-compose.yml's placeholder.
  if (config.tokenHashSecret?.startsWith('change-me')) inUse.push('TOKEN_HASH_SECRET');
  return inUse;
}

export function parseKeyValueList(value: string): Record<string, string> | undefined {
  const out: Record<string, string> = {};
  for (const part of value.split(',')) {
    if (part.trim() === '') continue;
    const eq = part.indexOf('=');
    if (eq <= 0) return undefined;
    const key = part.slice(0, eq).trim();
    if (!key) return undefined;
    try {
      out[key] = decodeURIComponent(part.slice(eq + 1).trim());
    } catch {
      return undefined;
    }
  }
  return out;
}

/**
 * What `killswitch gateway` takes from its environment. src/gateway/config.ts gets this, never the
 * environment itself: the three settings below are declared in SETTINGS like every other.
 */
export interface GatewaySettings {
  /** KILLSWITCH_URL (or its default): the control plane, when the config file has no `killswitch.url`. */
  killswitchUrl: string;
  /** KILLSWITCH_GATEWAY_KEY, when the config file has no `killswitch.gatewayKey`. */
  gatewayKey: string | undefined;
  /** KILLSWITCH_AGENT_TOKEN, when the config file has no `killswitch.agentToken`. */
  agentToken: string | undefined;
  /**
   * Only for `${env:NAME}` references in the gateway's config file (src/gateway/references.ts): they may
   * name any variable of the gateway's environment (an upstream's credential), not only our settings.
   */
  referenceEnv: Readonly<Env>;
}

/**
 * The gateway's settings. Not loadConfig: a desktop client's environment must not stop the gateway for a
 * control-plane setting it does not use; the gateway checks KILLSWITCH_URL itself (as it checks
 * `killswitch.url`). Empty counts as unset, as in loadConfig.
 */
export function gatewaySettings(env: Readonly<Env> = process.env): GatewaySettings {
  const set = (name: (typeof SETTINGS)[number]['env']): string | undefined => {
    const value = env[name];
    return value !== undefined && value !== '' ? value : undefined;
  };
  return {
    killswitchUrl: set('KILLSWITCH_URL') ?? settingDefault('KILLSWITCH_URL'),
    gatewayKey: set('KILLSWITCH_GATEWAY_KEY'),
    agentToken: set('KILLSWITCH_AGENT_TOKEN'),
    referenceEnv: env,
  };
}

/**
 * Where a setting's value came from, as CLI output names it: `DATABASE_URL`, or, when the environment does
 * not set it (empty counts as unset), `the default: DATABASE_URL is not set`, so an operator whose shell
 * lacks it sees that the command used another installation's default, not theirs.
 */
export function settingSource(name: (typeof SETTINGS)[number]['env'], env: Readonly<Env> = process.env): string {
  const value = env[name];
  return value !== undefined && value !== '' ? name : `the default: ${name} is not set`;
}

/** gatewaySettings() under the name src/cli/gateway.ts calls. */
export const gatewayReferenceEnv = (): GatewaySettings => gatewaySettings();

function settingExample(name: string): string {
  return (SETTINGS as readonly SettingSpec[]).find((s) => s.env === name)?.example ?? '';
}

function settingDefault(name: (typeof SETTINGS)[number]['env']): string {
  const spec: SettingSpec | undefined = SETTINGS.find((s) => s.env === name);
  if (spec?.default === undefined) throw new Error(`${name} has no default in SETTINGS`);
  return spec.default;
}

/**
 * How the primary of WORKERS > 1 hands its start sync's `flagsAtStart` to its workers (JSON, set in
 * src/cluster.ts, parsed by flagsAtStartFromEnv in src/flags/setup.ts). Set by the primary, never by an
 * operator: not in SETTINGS, so not in docs/configuration.md.
 */
export const FLAGS_AT_START_ENV = 'KILLSWITCH_FLAGS_AT_START';

/** In a worker: the primary's `flagsAtStart` as it was handed over (undefined in any other process). */
export function flagsAtStartFromPrimary(env: Env = process.env): string | undefined {
  return env[FLAGS_AT_START_ENV];
}

/** Environment for child processes we start (the embedded Unleash); never passed elsewhere. */
export function inheritedEnv(): Env {
  return { ...process.env };
}
