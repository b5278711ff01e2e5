# One image for every Ovation service; docker-compose.yml picks the service with `command`.
# Node 24 runs the TypeScript sources directly (type stripping), so there is no build stage:
# the image is the workspace with its dependencies installed and its code generated.
FROM node:24-bookworm-slim

# Pinned like `ov` and package.json's packageManager; installed with npm to stay corepack-free.
RUN npm install -g pnpm@10.34.8

ENV TURBO_TELEMETRY_DISABLED=1 \
    DO_NOT_TRACK=1

WORKDIR /app
COPY . .

# Dev dependencies stay: `generate` needs buf and protoc-gen-es, and the services run .ts sources.
RUN pnpm install --frozen-lockfile \
 && pnpm turbo run generate

# The services only read the tree; running them unprivileged costs nothing.
USER node

CMD ["node", "-e", "console.error('choose a service: command: [\"node\", \"services/<name>/src/main.ts\"]'); process.exit(2)"]
