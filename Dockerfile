# syntax=docker/dockerfile:1
# The softswitch in a container: a release build on the Rust image, copied into a slim
# Debian runtime that runs as a non-root user. Build: `podman build -t softswitch .`
# (on this project's machines: /work/shared/tools/container-recipe.sh build .).
# Run:  podman run -p 5060:5060/udp -p 5060:5060/tcp -p 127.0.0.1:9090:9090 softswitch

FROM rust:1-bookworm AS build
WORKDIR /src

# Dependencies first, against placeholder sources, so that this layer is rebuilt only
# when a manifest or the lock file changes, not on every source edit.
COPY Cargo.toml Cargo.lock ./
COPY actors/Cargo.toml actors/
RUN mkdir -p src actors/src bench \
 && echo 'fn main() {}' > src/main.rs \
 && echo 'fn main() {}' > bench/parse.rs \
 && touch src/lib.rs actors/src/lib.rs \
 && cargo build --release --locked --bin softswitch \
 && rm -rf src actors/src bench

# The real sources. COPY keeps the context's (older) mtimes, so touch the crate roots or
# cargo would take the placeholder build as up to date.
COPY . .
RUN touch src/main.rs src/lib.rs actors/src/lib.rs \
 && cargo build --release --locked --bin softswitch \
 && strip --strip-debug target/release/softswitch

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /var/lib/softswitch \
      --shell /usr/sbin/nologin softswitch \
 && mkdir -p /var/lib/softswitch \
 && chown softswitch:softswitch /var/lib/softswitch
COPY --from=build /src/target/release/softswitch /usr/local/bin/softswitch

# CDRs, the registration journal (and generated demo passwords, demo-users.txt) live on
# the data volume; HTTP must listen on all interfaces inside the container for published
# ports and the healthcheck.
ENV SOFTSWITCH_BILLING_CDR_PATH=/var/lib/softswitch/cdr.jsonl \
    SOFTSWITCH_REGISTRAR_STORE_PATH=/var/lib/softswitch/registrations.journal \
    SOFTSWITCH_HTTP_LISTEN=0.0.0.0:9090
WORKDIR /var/lib/softswitch
VOLUME ["/var/lib/softswitch"]
USER 10001:10001
EXPOSE 5060/udp 5060/tcp 9090/tcp
# The binary probes itself (`--healthcheck`), so the image needs no curl. podman keeps
# HEALTHCHECK only with `--format docker`.
HEALTHCHECK --interval=10s --timeout=5s --start-period=5s --retries=3 \
  CMD ["/usr/local/bin/softswitch", "--healthcheck", "http://127.0.0.1:9090/healthz"]
# SIGTERM starts a graceful drain (503 to new calls, CDRs flushed) and then exit 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/softswitch"]
