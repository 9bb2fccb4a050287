# Build stage: the admin UI (vite) needs the dev dependencies.
FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund --ignore-scripts
COPY . .
RUN npm run ui:build

FROM node:20-bookworm-slim
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund --ignore-scripts
COPY . .
COPY --from=build /app/ui/dist ./ui/dist
ENV NODE_ENV=production
# Inside a container the API must listen beyond loopback to be reachable through a published port.
ENV HOST=0.0.0.0
EXPOSE 8080
CMD ["node", "--no-allocation-site-pretenuring", "bin/killswitch.js", "start"]
