"""Deployment artefacts (compose, Dockerfiles, Prometheus, Grafana, Kubernetes) and their offline
validator."""
