# Accord on an empty base: the static binary of `make release`, a CA bundle
# for https participants and collectors, a non-root user and a data volume.
#
#   make release PLATFORMS=linux/amd64     (or build/release.sh linux/amd64)
#   docker build --build-arg BINARY=dist/accord_<version>_linux_amd64 -t accord .
#   docker run -p 7780:7780 -v accord-data:/data accord
#
# Not built in CI (there is no container runtime there); see
# docs/operations.md ("Release binaries and image").
FROM debian:12-slim AS certs
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates

FROM scratch
ARG BINARY
COPY --from=certs /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY ${BINARY} /accord
COPY --chown=65532:65532 deploy/docker/data /data
USER 65532:65532
VOLUME /data
EXPOSE 7780
ENTRYPOINT ["/accord"]
CMD ["server", "--addr", "0.0.0.0:7780", "--data", "/data/store"]
