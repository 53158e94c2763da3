# syntax=docker/dockerfile:1
# etcd-sentinel's image: built on Debian 12 with what scripts/install-deps installs for the build
# (protobuf-compiler, and libprotobuf-dev for Google's well-known .proto files), run as a non-root user on a
# distroless base with etcd and etcdutl beside it for the restore drill.
#   docker build -t etcd-sentinel .
FROM docker.io/library/rust:1.95-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends protobuf-compiler libprotobuf-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN cargo build --release --locked --bin etcd-sentinel \
 && strip target/release/etcd-sentinel \
 && mkdir -p /out/snapshots

# The etcd Kubernetes runs: the drill restores each snapshot with etcdutl and starts it with etcd.
FROM registry.k8s.io/etcd:3.5.21-0 AS etcd

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=etcd /usr/local/bin/etcd /usr/local/bin/etcdutl /usr/local/bin/etcdctl /usr/local/bin/
COPY --from=build /src/target/release/etcd-sentinel /usr/local/bin/etcd-sentinel
# The snapshot directory, owned by the user: a named volume mounted there starts with this owner.
COPY --from=build --chown=65532:65532 /out/snapshots /var/backups/etcd
USER 65532:65532
EXPOSE 9379
ENTRYPOINT ["/usr/local/bin/etcd-sentinel"]
CMD ["run", "--config", "/etc/etcd-sentinel/sentinel.toml"]
