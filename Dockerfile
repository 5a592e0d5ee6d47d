# loco-discovery: a static musl binary on distroless, running as an unprivileged user
# with no shell. Build:   docker build -t loco-discovery:0.1.0 .
#               minikube: minikube image build -t loco-discovery:0.1.0 .

ARG RUST_VERSION=1.95

# --- build: dependencies first, so that a source change rebuilds only the workspace ---
FROM rust:${RUST_VERSION}-alpine AS build
# musl headers and start files for ring's C and assembly (gcc is in the base image);
# the version is the one of the base image's Alpine release.
# hadolint ignore=DL3018
RUN apk add --no-cache musl-dev
WORKDIR /src

# 1. The dependency graph alone: fetched and compiled against placeholder sources.
COPY Cargo.toml Cargo.lock build.rs ./
COPY crates/core/Cargo.toml ./crates/core/
COPY crates/sim/Cargo.toml ./crates/sim/
# The workspace's load-test member is not built into the image; its manifest must exist.
COPY loadtest/Cargo.toml ./loadtest/
RUN mkdir -p src static loadtest/src crates/core/src crates/sim/src \
 && echo 'fn main() {}' > loadtest/src/main.rs \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs crates/core/src/lib.rs crates/sim/src/lib.rs \
 && cargo fetch --locked \
 && cargo build --release --locked --bin loco-discovery \
 && rm -rf src static crates/core/src crates/sim/src \
      target/release/loco-discovery* \
      target/release/deps/loco_discovery* \
      target/release/deps/libloco_discovery* \
      target/release/.fingerprint/loco-discovery* \
      target/release/build/loco-discovery-*

# 2. The real sources (static/ is embedded into the binary).
COPY src ./src
COPY crates ./crates
COPY static ./static
RUN cargo build --release --locked --offline --bin loco-discovery \
 && install -D -m 0555 target/release/loco-discovery /out/loco-discovery

# --- runtime: no shell, no package manager, nonroot (uid 65532) ------------------
FROM gcr.io/distroless/static-debian12:nonroot
LABEL org.opencontainers.image.title="loco-discovery" \
      org.opencontainers.image.description="Kubernetes EndpointSlice service-discovery push gateway for lego-loco-cluster" \
      org.opencontainers.image.licenses="MIT"
COPY --from=build /out/loco-discovery /usr/local/bin/loco-discovery
USER 65532:65532
# 8080: HTTP API and streams; 9090: /metrics, /healthz, /readyz when ADMIN_LISTEN_ADDR is set.
EXPOSE 8080 9090
ENTRYPOINT ["/usr/local/bin/loco-discovery"]
CMD ["serve"]
