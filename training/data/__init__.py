"""Offline datasets: generated, or shipped inside an installed package. Nothing is downloaded."""
