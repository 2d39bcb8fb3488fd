"""What runs inside or next to Triton: Python-backend models and the local launcher."""
