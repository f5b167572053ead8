# Multi-stage build of the settlegate binary.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin settlegate

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* && useradd --system --uid 10001 settlegate
COPY --from=build /src/target/release/settlegate /usr/local/bin/settlegate
USER settlegate
EXPOSE 8402
ENTRYPOINT ["settlegate"]
CMD ["serve"]
