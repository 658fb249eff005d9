# Multi-stage build: compile with the Rust toolchain, ship only the binary on a small,
# non-root runtime image (distroless "cc" has glibc, libgcc and CA certificates).
#   docker build -t sio-relay:0.1.0 .
#   docker run --rm -e SIO_RELAY_REDIS__URL=redis://redis:6379 sio-relay:0.1.0
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN cargo build --release --locked && strip target/release/sio-relay

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/sio-relay /usr/local/bin/sio-relay
COPY config.toml /etc/sio-relay/config.toml
USER nonroot:nonroot
EXPOSE 9464
ENTRYPOINT ["/usr/local/bin/sio-relay"]
CMD ["run", "--config", "/etc/sio-relay/config.toml"]
