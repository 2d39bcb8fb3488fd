"""Test helpers: free ports, tiny trained models, real Triton and gateway processes."""
