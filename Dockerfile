# rlinkd in a container: build with the Rust toolchain, run on a slim Debian with the binary only.
#   docker build -t rlinkd .
#   docker run --rm --network host -v /etc/rlinkd:/etc/rlinkd:ro -v /run/rlinkd:/run/rlinkd rlinkd
# --network host: the QUIC port is UDP and GSO/GRO want the host's interfaces; the config,
# certificates (key readable by uid 10001 only) and the endpoint folder come from the host.

FROM rust:bookworm AS build
# boring-sys builds BoringSSL with cmake and generates its bindings with libclang.
RUN apt-get update \
    && apt-get install -y --no-install-recommends cmake clang libclang-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
RUN cargo build --release --locked --bin rlinkd

FROM debian:bookworm-slim
# No TLS roots or shell tools are needed: rlinkd trusts only the cluster CA it is given.
RUN groupadd --system --gid 10001 rlinkd \
    && useradd --system --uid 10001 --gid rlinkd --no-create-home --shell /usr/sbin/nologin rlinkd \
    && install -d -o rlinkd -g rlinkd -m 0750 /run/rlinkd
COPY --from=build /src/target/release/rlinkd /usr/local/bin/rlinkd
USER rlinkd:rlinkd
ENTRYPOINT ["/usr/local/bin/rlinkd"]
CMD ["run", "--config", "/etc/rlinkd/rlinkd.toml"]
