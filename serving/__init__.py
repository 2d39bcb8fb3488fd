"""Serving side: what runs inside Triton and the FastAPI gateway in front of it."""
