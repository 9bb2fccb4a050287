# Build stage: the admin UI (vite) needs the dev dependencies.
FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund --ignore-scripts
COPY . .
RUN npm run ui:build

FROM node:20-bookworm-slim
# For scanners and SBOM tools; LICENSE and NOTICE are copied with the sources, the admin UI's bundled
# licenses are ui/dist/third-party-licenses.md.
LABEL org.opencontainers.image.title="mcp-killswitch" \
      org.opencontainers.image.description="Kill switch and control plane for MCP" \
      org.opencontainers.image.licenses="Apache-2.0"
WORKDIR /app
COPY package.json package-lock.json ./
# No dependency's install script runs (none is needed: CONTRIBUTING.md, "Dependencies"); the npm cache
# stays out of the layer.
RUN npm ci --omit=dev --no-audit --no-fund --ignore-scripts && npm cache clean --force
COPY . .
COPY --from=build /app/ui/dist ./ui/dist
# The bundle bin/killswitch.js runs (bin/bundle.js), built here: the code is read-only to the user below.
RUN KILLSWITCH_BUNDLE=1 node bin/killswitch.js --version
# The process runs as the image's unprivileged user `node` (uid 1000): the code stays root's and read-only
# to it; it writes only DATA_DIR (audit spool, flag backup). A volume mounted there for the first time
# takes this directory's owner.
RUN mkdir -p /var/lib/killswitch && chown node:node /var/lib/killswitch
ENV NODE_ENV=production
# Inside a container the API must listen beyond loopback to be reachable through a published port.
ENV HOST=0.0.0.0
ENV DATA_DIR=/var/lib/killswitch
USER node
EXPOSE 8080
# Liveness, as in docker-compose.yml (scripts/docker/healthcheck.js says why not /readyz). The start
# period covers migrations and the wait for the first flags.
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 CMD ["node", "/app/scripts/docker/healthcheck.js"]
# node itself, not npm: Docker's SIGTERM goes to this process, which drains (docs/operations.md, section 7).
CMD ["node", "--no-allocation-site-pretenuring", "bin/killswitch.js", "start"]
