# warmpool container image.
#
#   docker build -t warmpool .
#   docker run -d -p 8080:8080 -v warmpool-data:/data warmpool
#
# Two stages on Debian 12: "build" compiles warmpool with the -dev packages
# and runs the unit tests (a failing test fails the build); the runtime stage
# has only the shared libraries the binary links (found by dpkg-shlibdeps), the
# binary, and a non-root user. The entrypoint (docker/entrypoint.sh) starts as
# root, gives /data to that user (so a root-owned bind mount works) and drops to
# it with setpriv; started with --user UID it runs as UID if /data is writable.
# warmpool is PID 1 and handles SIGTERM itself: `docker stop` stops new work,
# lets running tasks finish (WARMPOOL_GRACE_MS) and exits 0. Data lives in the
# /data volume. See docker/README.md.
ARG BASE=debian:bookworm-slim

# --------------------------------------------------------------------- build
FROM ${BASE} AS build
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
        build-essential cmake pkg-config \
        libmicrohttpd-dev libjansson-dev libsqlite3-dev libvectorscan-dev libpq-dev \
        libcmocka-dev libcurl4-openssl-dev libssl-dev \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY . .
# UNIT_TESTS=0 skips the unit tests (only for a quick local try; CI runs them)
ARG UNIT_TESTS=1
RUN cmake -S . -B /build -DCMAKE_BUILD_TYPE=Release -DWARMPOOL_TESTS=ON \
 && cmake --build /build -j"$(nproc)" \
 && if [ "$UNIT_TESTS" = 1 ]; then ctest --test-dir /build -L unit --output-on-failure; fi

# Stage what the runtime image gets under /out/usr/local: the project's install
# rules (bin/warmpool, lib/warmpool/liblookup.so: the example plugin), stripped,
# and the rules files (share/warmpool/rules). Then list, as Debian package
# names, the shared libraries those ELF files link (e.g. "libjansson4
# libmicrohttpd12 libsqlite3-0 libvectorscan5"): the runtime stage installs them.
RUN cmake --install /build --prefix /out/usr/local --strip \
 && if [ -d rules ]; then \
        mkdir -p /out/usr/local/share/warmpool/rules \
     && cp -p rules/*.rules /out/usr/local/share/warmpool/rules/; \
    fi \
 && mkdir -p /tmp/shlibs/debian && touch /tmp/shlibs/debian/control && cd /tmp/shlibs \
 && elfs=$(find /out/usr/local -type f \( -perm -u+x -o -name '*.so*' \) -exec sh -c \
        'head -c4 "$1" | grep -q ELF' _ {} \; -print) \
 && dpkg-shlibdeps -O -e $elfs 2>/dev/null \
    | sed -e 's/^shlibs:Depends=//' -e 's/([^)]*)//g' -e 's/[,|]/ /g' \
    | tr -s ' ' '\n' | grep -v -x -e '' -e libc6 | sort -u > /out/runtime-packages \
 && test -x /out/usr/local/bin/warmpool \
 && echo "runtime files:" $elfs \
 && echo "runtime packages:" $(cat /out/runtime-packages)

# ------------------------------------------------------------------- runtime
FROM ${BASE}
ARG DEBIAN_FRONTEND=noninteractive
# Checklist: docker/entrypoint.sh's APP_UID is the same.
ARG APP_UID=10001
COPY --from=build /out/runtime-packages /tmp/runtime-packages
RUN apt-get update \
 && apt-get install -y --no-install-recommends $(cat /tmp/runtime-packages) \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/cache/debconf/*-old \
           /var/lib/dpkg/*-old /var/log/apt /var/log/dpkg.log /tmp/runtime-packages \
 && groupadd --system --gid "${APP_UID}" warmpool \
 && useradd --system --uid "${APP_UID}" --gid warmpool --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin warmpool \
 && mkdir -p /data \
 && chown "${APP_UID}:0" /data && chmod 0775 /data
# /data is the service user's and group 0's: a new named volume is a copy of it, so
# it also works for an arbitrary uid (docker run --user 12345, OpenShift), whose
# group is 0.

COPY --from=build /out/usr/local/ /usr/local/
COPY --chmod=0755 docker/entrypoint.sh /usr/local/bin/warmpool-entrypoint
# fail the build here, not at run time, if a shared library is missing
RUN ! find /usr/local/bin /usr/local/lib -type f -exec ldd {} + 2>/dev/null | grep 'not found' \
 && warmpool --help >/dev/null && setpriv --version >/dev/null

# Every flag has a WARMPOOL_* twin; `docker run -e WARMPOOL_WORKERS=4` or
# flags after the image name (`docker run IMAGE --workers 4`) override these.
# The grace period stays under the 10 s that `docker stop` waits by default.
ENV WARMPOOL_LISTEN=0.0.0.0:8080 \
    WARMPOOL_DB=/data/warmpool.db \
    WARMPOOL_GRACE_MS=8000
VOLUME /data
WORKDIR /data
EXPOSE 8080
# No USER: the entrypoint starts as root only to fix /data, then runs warmpool as
# APP_UID (setpriv, no new privileges). `--user UID[:GID]` skips the root part.
STOPSIGNAL SIGTERM
# `warmpool healthcheck` GETs /healthz on WARMPOOL_LISTEN: no curl in the image
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["warmpool", "healthcheck"]
ENTRYPOINT ["warmpool-entrypoint"]

LABEL org.opencontainers.image.title="warmpool" \
      org.opencontainers.image.description="HTTP job server for CPU-heavy tasks with a preloaded, copy-on-write context"
