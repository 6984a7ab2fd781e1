# syntax=docker/dockerfile:1.7
# One image, three binaries: pricing-oracle-keeper, bridge-health-keeper and db-backup, in
# /usr/local/bin, run as the unprivileged user 65532. The Helm chart picks the binary with
# `command:`; on its own: docker run IMAGE pricing-oracle-keeper wallet --offline.
#
# The backup uses pg_dump/pg_restore of PostgreSQL ${PG_MAJOR} (17 by default) from the PGDG
# repository: pg_dump must be at least the server's major version and dumps servers back to 9.2.
# Build with a different major: docker build --build-arg PG_MAJOR=16 .
#
# No HEALTHCHECK: Kubernetes probes (/healthz, /readyz) and the systemd watchdog cover liveness,
# and a Docker HEALTHCHECK would only duplicate them with a curl the image does not need.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm
ARG PG_MAJOR=17

FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS builder
WORKDIR /src
ENV CARGO_TERM_COLOR=never \
    CARGO_PROFILE_RELEASE_STRIP=symbols \
    SQLX_OFFLINE=true
# The whole workspace (every member's manifest must exist); .dockerignore keeps target/ out.
COPY Cargo.toml Cargo.lock ./
COPY common ./common
COPY keepers ./keepers
COPY tests ./tests
COPY migrations ./migrations
# The example files are compiled in as the built-in defaults.
COPY config ./config
# One invocation for the three binaries: the crates have no features to unify, so db-backup links
# only keeper-runtime whatever else is built beside it.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p pricing-oracle-keeper -p bridge-health-keeper -p db-backup \
    && mkdir -p /out \
    && cp target/release/pricing-oracle-keeper target/release/bridge-health-keeper \
        target/release/db-backup /out/

# The PGDG signing key as Debian's postgresql-common ships it, so no key is fetched by URL.
FROM debian:${DEBIAN_RELEASE}-slim AS pgdg-key
RUN apt-get update \
    && apt-get install -y --no-install-recommends postgresql-common \
    && cp /usr/share/postgresql-common/pgdg/apt.postgresql.org.asc /pgdg.asc

FROM debian:${DEBIAN_RELEASE}-slim AS runtime
ARG DEBIAN_RELEASE
ARG PG_MAJOR
COPY --from=pgdg-key /pgdg.asc /usr/share/keyrings/apt.postgresql.org.asc
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && echo "deb [signed-by=/usr/share/keyrings/apt.postgresql.org.asc] https://apt.postgresql.org/pub/repos/apt ${DEBIAN_RELEASE}-pgdg main" \
        > /etc/apt/sources.list.d/pgdg.list \
    && apt-get update \
    && apt-get install -y --no-install-recommends "postgresql-client-${PG_MAJOR}" \
    && rm -rf /var/lib/apt/lists/* \
    && "/usr/lib/postgresql/${PG_MAJOR}/bin/pg_dump" --version \
    && groupadd --system --gid 65532 keepers \
    && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin keepers
COPY --from=builder /out/pricing-oracle-keeper /out/bridge-health-keeper /out/db-backup /usr/local/bin/
ENV PATH="/usr/lib/postgresql/${PG_MAJOR}/bin:${PATH}" \
    PG_DUMP_PATH="/usr/lib/postgresql/${PG_MAJOR}/bin/pg_dump" \
    PG_RESTORE_PATH="/usr/lib/postgresql/${PG_MAJOR}/bin/pg_restore" \
    LOG_FORMAT=json
LABEL org.opencontainers.image.title="tonsurance-keepers" \
      org.opencontainers.image.description="Tonsurance keepers: pricing oracle, bridge health, PostgreSQL backup" \
      org.opencontainers.image.source="https://github.com/tonsurance/keepers" \
      org.opencontainers.image.licenses="Apache-2.0"
# Ops servers: pricing 9101, bridge 9102, backup 9103 (set METRICS_ADDR=0.0.0.0:PORT to expose).
EXPOSE 9101 9102 9103
USER 65532:65532
WORKDIR /tmp
CMD ["pricing-oracle-keeper"]
