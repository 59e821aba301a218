# syntax=docker/dockerfile:1
#
# litestream-rs: a drop-in replacement for the official litestream/litestream image.
#   * binary at /usr/local/bin/litestream, ENTRYPOINT ["/usr/local/bin/litestream"], CMD ["replicate"]
#     (same conventions as the official image, so `entrypoint: ["/bin/sh", "-c"]` overrides work);
#   * /bin/sh and CA certificates available (debian slim);
#   * runs as the non-root user `litestream` (uid/gid 1000) that owns /data.
#
# Build:  docker build -t litestream-rs .
# Build with fewer backends:  docker build --build-arg FEATURES=s3 -t litestream-rs .

ARG RUST_VERSION=1.89
ARG DEBIAN_RELEASE=bookworm

# ---- builder ---------------------------------------------------------------------------------
FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS builder
ARG FEATURES="s3 abs sftp"
WORKDIR /src
# rusqlite is built with the bundled SQLite: a C compiler is all it needs (in the rust image).
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p litestream-cli --features "${FEATURES}" \
 && install -D -m 0755 target/release/litestream /out/litestream

# ---- runtime ---------------------------------------------------------------------------------
FROM debian:${DEBIAN_RELEASE}-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates tzdata \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 1000 litestream \
 && useradd --uid 1000 --gid 1000 --no-create-home --home-dir /data --shell /usr/sbin/nologin litestream \
 && mkdir -p /data \
 && chown litestream:litestream /data
COPY --from=builder /out/litestream /usr/local/bin/litestream
USER litestream:litestream
WORKDIR /data
VOLUME ["/data"]
# Metrics and /healthz when `addr: ":9090"` is set in litestream.yml.
EXPOSE 9090
ENTRYPOINT ["/usr/local/bin/litestream"]
CMD ["replicate"]
