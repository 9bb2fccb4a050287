// Docker's health check of the control plane (the Dockerfile's HEALTHCHECK and docker-compose.yml):
// exit 0 when GET /healthz answers 200 on this container's HOST and PORT. Plain node, because the image
// has neither curl nor wget.
//
// Liveness (/healthz), not readiness (/readyz): Swarm and tools like autoheal replace an unhealthy
// container, and replacing a replica because Postgres, Redis or Unleash is away fixes nothing (the new one
// waits for them too) while it cuts its requests in flight. Readiness is for a load balancer (operations.md).

const host = process.env.HOST ?? '';
// A wildcard address listens on loopback too; an IPv6 literal needs brackets in a URL.
const target = host === '' || host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host.includes(':') ? `[${host}]` : host;
const url = `http://${target}:${process.env.PORT || '8080'}/healthz`;

try {
  const res = await fetch(url, { signal: AbortSignal.timeout(4_000) });
  if (!res.ok) console.error(`${url}: HTTP ${res.status}`);
  process.exitCode = res.ok ? 0 : 1;
} catch (err) {
  // fetch says only "fetch failed"; the cause says why (ECONNREFUSED, a timeout).
  const cause = err instanceof Error && err.cause instanceof Error ? `: ${err.cause.message}` : '';
  console.error(`${url}: ${err instanceof Error ? err.message : String(err)}${cause}`);
  process.exitCode = 1;
}
