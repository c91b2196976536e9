"""Evaluation by docs/protocol.md: metrics, the evaluate use case, reports, figures, overlays."""
