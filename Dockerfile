# orb server image: docker build -t orb . && docker run -p 7700:7700 -p 7780:7780 -v orb-data:/data orb
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p orb-cli

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --home-dir /data --create-home orb
COPY --from=build /src/target/release/orb /usr/local/bin/orb
USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
EXPOSE 7700 7780
STOPSIGNAL SIGTERM
# Listen on all interfaces inside the container; tokens are generated in /data on first start.
ENTRYPOINT ["/usr/local/bin/orb"]
CMD ["serve", "--listen", "0.0.0.0:7700", "--http", "0.0.0.0:7780", "--data", "/data"]
