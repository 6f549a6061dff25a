# The one Baton image: `baton sidecar --config FILE` and `baton operator [flags]` (docs/image.md).
# Build: docker build -t baton .

# Node 26, the Active LTS line (Node 20 reached its end of life on 2026-04-30), pinned to the
# release the tests and the bench run: they fetch this same version (scripts/ensure-node.sh).
ARG NODE_VERSION=26.12.1

# Compile TypeScript to dist/ with the dev dependencies (tsc, types), but only what `baton` runs: the
# CLI with everything it imports, and the echo backend that `baton demo` spawns. (`npm run build`
# compiles all of tsconfig.json's include: tests and dev tools too, which need files the context
# leaves out.) Only dist/ leaves this stage.
FROM node:${NODE_VERSION}-bookworm AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY . .
RUN node_modules/.bin/tsc -p tsconfig.image.json

# The production dependencies only, on the same Debian and Node as the runtime stage, so the native
# addon of the optional `bufferutil` fits it. --ignore-scripts because the root `prepare` script
# needs tsc; `npm rebuild bufferutil` then runs bufferutil's install script alone: it keeps the
# prebuilt addon where there is one (linux-x64) and compiles it elsewhere (arm64; this full image
# has the toolchain). Type declarations and source maps are never loaded: dropping them saves
# about 45 MB.
FROM node:${NODE_VERSION}-bookworm AS prod-deps
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund \
 && npm rebuild bufferutil \
 && find node_modules -type f \( -name '*.d.ts' -o -name '*.d.mts' -o -name '*.d.cts' -o -name '*.map' \) -delete

# Runtime: files only, owned by root and read-only to the numeric non-root user (the Helm chart's
# runAsUser), so a read-only root filesystem works: nothing is written under /app.
FROM node:${NODE_VERSION}-bookworm-slim AS runtime
ARG VERSION=""
ARG REVISION=""
LABEL org.opencontainers.image.title="baton" \
      org.opencontainers.image.description="Stateful WebSocket balancing for Kubernetes: the sidecar (baton sidecar) and the operator (baton operator)" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
WORKDIR /app
# No NODE_OPTIONS: V8's default young generation. A smaller one (--max-semi-space-size) only lowers
# the memory held for some seconds after a burst of handshakes, and costs CPU in every burst
# (docs/performance.md, "Memory per idle session").
ENV NODE_ENV=production
COPY --from=prod-deps /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY package.json ./
COPY bin/baton.js ./bin/
USER 10001:10001
# The sidecar's client listener and admin API; the operator's /metrics, /healthz and /readyz are on 8080.
EXPOSE 8080 9901
ENTRYPOINT ["node", "/app/bin/baton.js"]
CMD ["--help"]
