# syntax=docker/dockerfile:1
#
# litestream-rs: a drop-in replacement for the official litestream/litestream image.
#   * alpine, the binary at /usr/local/bin/litestream, ENTRYPOINT ["/usr/local/bin/litestream"],
#     CMD [] -- the official image's conventions, so `command: ["replicate"]` and
#     `entrypoint: ["/bin/sh", "-c"]` compose files work unchanged;
#   * /bin/sh is busybox ash, which execs the last command of `sh -c "..."`: with the seed's
#     `entrypoint: ["/bin/sh", "-c"]` litestream itself is PID 1, so `docker stop`'s SIGTERM
#     reaches it and it does its final sync (bin/litestream/tests/cli/image_shell.rs checks this with
#     the same busybox);
#   * runs as root, as the official image does: a volume it left behind (the database and
#     `.app.db-litestream/` owned by root) keeps working after the swap. To run as another uid,
#     give the service `user: "1000:1000"` and make the volume that uid's once, e.g.
#     `docker run --rm -v <project>_app-data:/data alpine chown -R 1000:1000 /data`
#     (the app must write the database as a uid that can also read it: the same uid, or a
#     shared group with a umask of 002);
#   * CA certificates for S3/Azure over HTTPS; SFTP host keys trusted on first use are kept on
#     the data volume (/data/.app.db-litestream/known_hosts), so HOME needs nothing.
#
# Build:  docker build -t litestream-rs .
# Build with fewer backends:  docker build --build-arg FEATURES=s3 -t litestream-rs .

ARG RUST_VERSION=1.89
ARG ALPINE_VERSION=3.22

# ---- builder ---------------------------------------------------------------------------------
FROM rust:${RUST_VERSION}-alpine${ALPINE_VERSION} AS builder
ARG FEATURES="s3 abs sftp"
# A C toolchain for the bundled SQLite, ring and aws-lc (musl target).
RUN apk add --no-cache build-base cmake perl
WORKDIR /src
COPY . .
# The release profile (Cargo.toml) strips symbols and carries no debug info.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p litestream-cli --no-default-features --features "${FEATURES}" \
 && install -D -m 0755 target/release/litestream /out/litestream

# ---- runtime ---------------------------------------------------------------------------------
FROM alpine:${ALPINE_VERSION}
RUN apk add --no-cache ca-certificates tzdata \
 && [ "$(readlink -f /bin/sh)" = /bin/busybox ]
COPY --from=builder /out/litestream /usr/local/bin/litestream
ENTRYPOINT ["/usr/local/bin/litestream"]
CMD []
