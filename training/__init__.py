"""Training side: model architectures, offline datasets and one recipe per task."""
