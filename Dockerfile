# egress-proxy container image: multi-stage on Debian 12 (bookworm).
#
#   docker build -t egress-guard/egress-proxy:0.1.0 .
#   docker run --rm -p 3128:3128 -p 9901:9901 egress-guard/egress-proxy:0.1.0
#
# NOT BUILT IN CI: the development machine has no Docker engine. What the image does at
# run time is tested instead by tests/charts/sandbox_test.py, which starts the same binary
# the way the Helm charts run it (read-only root filesystem, UID/GID 65532, no
# capabilities, new PID namespace, under bubblewrap) and passes a CONNECT through it.
# Pin the base images by digest in your build system (e.g. --build-arg
# DEBIAN_IMAGE=debian:12@sha256:...); they are tags here because no registry is reachable
# from where this file was written.

ARG DEBIAN_IMAGE=debian:12
ARG DEBIAN_SLIM_IMAGE=debian:12-slim

# ---- build: the Debian -dev packages the CMake project finds, then only the proxy target.
FROM ${DEBIAN_IMAGE} AS build
ARG DEBIAN_FRONTEND=noninteractive
SHELL ["/bin/bash", "-euo", "pipefail", "-c"]
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      build-essential cmake ninja-build pkg-config \
      libboost1.81-dev libboost-json1.81-dev libboost-url1.81-dev \
      libssl-dev libyaml-cpp-dev libc-ares-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DEGRESS_TESTS=OFF -DEGRESS_WERROR=ON \
 && cmake --build build --target egress-proxy \
 && strip build/proxy/egress-proxy
# The runtime packages are derived from what the binary links, so the final stage holds
# exactly those and nothing else. With today's sources that is libc-ares2 and
# libyaml-cpp0.7 (+ libc6, libstdc++6, libgcc-s1, already in debian:12-slim); libssl3,
# libboost-system1.81.0 or libboost-json1.81.0 join automatically if the proxy starts to
# link them. Fails if a linked library belongs to no Debian package.
RUN ldd build/proxy/egress-proxy \
    | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' | sort -u \
    | while read -r lib; do \
        for p in "$lib" "$(readlink -f "$lib")" "/usr$lib" "${lib#/usr}"; do \
          if pkg=$(dpkg -S "$p" 2>/dev/null); then echo "${pkg%%:*}"; continue 2; fi; \
        done; \
        echo "no Debian package owns $lib" >&2; exit 1; \
      done | sort -u > /runtime-packages \
 && echo "runtime packages:" $(cat /runtime-packages)

# ---- runtime: debian:12-slim, the runtime libraries, the binary, a numeric non-root user.
FROM ${DEBIAN_SLIM_IMAGE}
ARG DEBIAN_FRONTEND=noninteractive
COPY --from=build /runtime-packages /tmp/runtime-packages
RUN apt-get update \
 && apt-get install -y --no-install-recommends $(cat /tmp/runtime-packages) \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/log/* /tmp/runtime-packages
COPY --from=build /src/build/proxy/egress-proxy /usr/local/bin/egress-proxy
# A default config for `docker run`; the charts mount their ConfigMap over /etc/egress-proxy.
COPY policies/examples/gateway/proxy.yaml /etc/egress-proxy/proxy.yaml
# Fails the build if a runtime library is missing or the config does not load.
RUN ["/usr/local/bin/egress-proxy", "--config", "/etc/egress-proxy/proxy.yaml", "--check-config"]

# Numeric, so Kubernetes' runAsNonRoot can verify it without an /etc/passwd lookup; the
# charts set the same IDs. The proxy writes nothing to disk (read-only root filesystem),
# needs no capabilities (ports above 1024), logs JSON lines to stdout, and runs without a
# shell (exec-form ENTRYPOINT; nothing in the image is started through /bin/sh).
USER 65532:65532
EXPOSE 3128 9901
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/egress-proxy"]
CMD ["--config", "/etc/egress-proxy/proxy.yaml"]
