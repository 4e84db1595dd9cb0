"""Serving: feature assembly, the ANN index of item embeddings, and the funnel."""
