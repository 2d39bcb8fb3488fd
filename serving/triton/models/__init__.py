"""Python-backend model sources. Each file is copied into a model version folder as model.py."""
