# Prometheus where the upstream image (prom/prometheus) cannot be pulled: Debian's `prometheus`
# package on the same base. `make images` fetches the .deb with the host's apt (`apt-get download`)
# into build/debs/, so the build itself needs no network; only the static server binary is kept.
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}
COPY build/debs/prometheus/ /tmp/debs/
RUN dpkg-deb -x /tmp/debs/prometheus_*.deb /tmp/prom \
    && install -m 0755 /tmp/prom/usr/bin/prometheus /usr/local/bin/prometheus \
    && rm -rf /tmp/debs /tmp/prom \
    && mkdir -p /prometheus && chown 65534:65534 /prometheus
USER 65534:65534
EXPOSE 9090
VOLUME ["/prometheus"]
ENTRYPOINT ["/usr/local/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
