# syntax=docker/dockerfile:1
#
# backup-service image: a release build on Debian bookworm, run as a non-root
# user on bookworm-slim. Build and run:
#
#   docker build -t backup-service:0.1.0 .
#   docker run --rm -p 50051:50051 -p 8080:8080 -v backup-data:/data backup-service:0.1.0
#
# The Helm chart in helm/backup-service runs it with a read-only root
# filesystem, /tmp and /data as writable volumes.

# ---------------------------------------------------------------------------
FROM rust:1-bookworm AS builder
WORKDIR /src

# Protos are compiled by build.rs in pure Rust (protox): no protoc needed.
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto ./proto
COPY src ./src

# The cargo registry and target directory are cache mounts, so rebuilds after
# a source change only recompile what changed. The binary is copied out of the
# cache mount, which is not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin backup-service \
 && install -D -m 0755 target/release/backup-service /out/backup-service

# ---------------------------------------------------------------------------
FROM debian:bookworm-slim AS runtime

# CA certificates for TLS to PostgreSQL and object storage. No init process is
# needed: the server handles SIGTERM itself and starts no children.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 backup \
 && useradd --system --uid 10001 --gid 10001 --home-dir /data --no-create-home \
      --shell /usr/sbin/nologin backup \
 && mkdir -p /data \
 && chown 10001:10001 /data

COPY --from=builder /out/backup-service /usr/local/bin/backup-service

# Relative defaults (sqlite://data/app.db, data/backups) resolve under /data,
# the one writable volume; TMPDIR holds PostgreSQL spill files.
WORKDIR /data
ENV TMPDIR=/tmp

USER 10001:10001
EXPOSE 50051 8080
ENTRYPOINT ["backup-service"]
CMD ["serve"]
