# syntax=docker/dockerfile:1
# The one mapchaos image: `mapchaos operator`, `mapchaos sidecar`, `mapchaos run`, ...
#
#   docker build -t ghcr.io/mapchaos/mapchaos:0.1.0 .
#
# Builder and runtime are both Debian 12 (bookworm): the binary links glibc dynamically,
# so the builder's glibc must not be newer than the runtime's (the plain rust:1.95 tag
# may be a newer Debian). No OpenSSL: TLS is rustls with ring.

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
# The whole workspace: cargo needs every member's manifest, and the lockfile pins
# every dependency (--locked).
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p mapchaos \
    && install -D -m 0755 target/release/mapchaos /out/mapchaos

# distroless/cc: glibc, libgcc and CA certificates, no shell, no package manager.
# The :nonroot tag runs as uid/gid 65532, which the chart's securityContext also sets.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/mapchaos /usr/local/bin/mapchaos
USER 65532:65532
# 8080: operator /metrics, /healthz, /readyz. 9464: sidecar HTTP (metrics, storm API).
# 6379: sidecar RESP (bound to 127.0.0.1 by default, pod-local).
EXPOSE 8080 9464 6379
ENTRYPOINT ["/usr/local/bin/mapchaos"]
CMD ["--help"]
