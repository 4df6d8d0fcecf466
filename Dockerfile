# syntax=docker/dockerfile:1
# pitstop controller image: `docker build -t pitstop .` from the repository root.
#
# The binary links glibc dynamically (rustls with the ring provider, part C and assembly;
# no OpenSSL), so the runtime is distroless "cc" (glibc, libgcc, CA certificates), on the
# same Debian release as the builder so the glibc versions match.

FROM rust:1.95-bookworm AS builder
WORKDIR /src
# The whole workspace manifest set is needed to resolve `-p pitstop` with --locked.
COPY Cargo.toml Cargo.lock ./
COPY controller ./controller
COPY e2e ./e2e
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p pitstop \
 && install -D -m 0755 target/release/pitstop /out/pitstop

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /out/pitstop /pitstop
# distroless "nonroot": uid/gid 65532, the same ids the Helm chart's securityContext asks for.
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/pitstop"]
CMD ["controller"]
