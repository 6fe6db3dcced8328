# syntax=docker/dockerfile:1
# The snapblock image: one binary for `snapblock controller`, `snapblock node` and the operator
# CLI. Build: docker build -t ghcr.io/snapblock/snapblock:$(node -p 'require("./package.json").version') .
# (Not built in this repository's CI, which has no Docker; hack/kind-e2e.sh builds and runs it.)

ARG NODE_IMAGE=node:20-bookworm-slim

# --- build: compile the TypeScript, then keep only the production dependencies -------------------
FROM ${NODE_IMAGE} AS build
# A C compiler for snapblock-nbd-netlink (native/nbd-netlink), the kernel nbd netlink helper.
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY package.json package-lock.json ./
# --ignore-scripts: the prepare script would build before the sources are here; built below.
RUN npm ci --ignore-scripts
COPY tsconfig.json tsconfig.build.json ./
COPY proto ./proto
COPY pkg ./pkg
COPY cmd ./cmd
COPY native ./native
# build:native fails without a compiler (npm run build alone would only warn): the image must have it.
RUN npm run build && npm run build:native && npm prune --omit=dev

# --- runtime -------------------------------------------------------------------------------------
FROM ${NODE_IMAGE}
# What the node plugin runs: snapblock-nbd-netlink (built above) or nbd-client (kernel NBD), nbdfuse from libnbd-bin + fuse3 + losetup
# (no nbd module), mkfs/fsck/resize for ext4 and xfs, mount/umount/blkid/losetup/fsfreeze
# (util-linux, mount), modprobe (kmod). tini reaps the nbdfuse and nbd-client children as PID 1.
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      tini nbd-client libnbd-bin fuse3 e2fsprogs xfsprogs util-linux mount kmod ca-certificates \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY --from=build /src/package.json ./package.json
COPY --from=build /src/node_modules ./node_modules
COPY --from=build /src/dist ./dist
# Found next to package.json by the data plane (pkg/attach/nbd-netlink.ts): kernel nbd devices
# attached through it survive a data plane restart (docs/node-attach.md, "Restarts").
COPY --from=build /src/native/nbd-netlink/snapblock-nbd-netlink ./native/nbd-netlink/snapblock-nbd-netlink
# The protos, also in dist/proto with their parsed form (npm run build), are loaded at runtime.
COPY --from=build /src/proto ./proto

# Non-root by default: the controller needs no privilege. The node plugin's DaemonSet runs the
# same image as root, privileged (NBD, loop devices, mkfs, mount).
RUN groupadd --system --gid 65532 snapblock \
 && useradd --system --uid 65532 --gid 65532 --home-dir /nonexistent --shell /usr/sbin/nologin snapblock
USER 65532:65532

ENV NODE_ENV=production
ENTRYPOINT ["/usr/bin/tini", "--", "node", "/app/dist/cmd/snapblock.js"]
CMD ["--help"]
