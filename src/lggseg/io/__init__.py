"""Bytes in and out: image and NIfTI decoding, atomic writes, progress bars."""
