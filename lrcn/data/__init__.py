"""Datasets: native readers, manifests, media, sources, feature stores, synthetic data."""
