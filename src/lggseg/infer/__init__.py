"""Inference: preprocessing, backends, post-processing and the one predict path (Segmenter)."""
