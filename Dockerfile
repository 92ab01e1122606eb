# syntax=docker/dockerfile:1
# The proxy's container image: `docker build -t mlproxy .` (docs/deploy.md).
#
# Stage 1 builds with the official Swift image (Debian bookworm, the runtime's release) and the -dev
# packages of the libraries the plugins link; the Swift runtime is linked statically, so the runtime
# image needs no Swift. Stage 2 is slim Debian with only the shared libraries the host and the
# bundled plugins load.
ARG SWIFT_IMAGE=swift:6.3-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${SWIFT_IMAGE} AS build
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
       libjansson-dev libsimdjson-dev libffi-dev libjpeg62-turbo-dev libpng-dev pkg-config make \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The build folder is a cache mount (BuildKit): rebuilds reuse the fetched packages and objects.
# The plugins are built with plain cc (`make plugins`), as users build theirs: SwiftPM would link
# them against the Swift runtime, which the runtime image does not have.
RUN --mount=type=cache,target=/src/.build \
    swift build -c release --static-swift-stdlib --product mlproxy \
    && make DEB_PACKAGES= plugins \
    && mkdir -p /staging/plugins \
    && cp "$(swift build -c release --show-bin-path)/mlproxy" /staging/ \
    && strip /staging/mlproxy \
    && cp .build/c-plugins/libmlp_*.so /staging/plugins/

FROM ${RUNTIME_IMAGE}
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
       libjansson4 libsimdjson14 libffi8 libjpeg62-turbo libpng16-16 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin mlproxy
COPY --from=build /staging/mlproxy /usr/bin/mlproxy
# The bundled plugins; add your own .so files to this folder (or mount them and list them under
# `plugins:` in the config).
COPY --from=build /staging/plugins/ /usr/lib/mlproxy/plugins/
# The default config: the proxy on :8080 in front of its built-in simulated model server. Mount a
# ConfigMap over /etc/mlproxy to serve your models.
COPY deploy/container.yaml /etc/mlproxy/config.yaml
ENV MLPROXY_PLUGIN_PATH=/usr/lib/mlproxy/plugins
USER 10001:10001
EXPOSE 8080
# Exec form: the proxy is PID 1 and gets SIGTERM (graceful drain) and SIGHUP (reload) itself.
ENTRYPOINT ["/usr/bin/mlproxy"]
CMD ["serve", "--config", "/etc/mlproxy/config.yaml"]
