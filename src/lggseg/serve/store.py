"""Results kept for download: bit-packed masks in a bounded, least-recently-used store."""

from __future__ import annotations

import collections
import secrets
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from lggseg.serve.cases import Case
from lggseg.serve.limits import reject


@dataclass
class StoredCase:
    name: str
    shape: tuple[int, int, int]
    packed: np.ndarray  # np.packbits of the (Z, H, W) mask
    slice_names: list[str]
    reference: Any = None

    def mask(self) -> np.ndarray:
        """The whole ``(Z, H, W)`` bool mask."""
        return self.mask_uint8().astype(bool)

    def mask_uint8(self) -> np.ndarray:
        """The whole ``(Z, H, W)`` mask as uint8 0/1 (one unpacked copy, no bool round trip)."""
        count = int(np.prod(self.shape))
        return np.unpackbits(self.packed, count=count).reshape(self.shape)

    def slice_mask(self, z: int) -> np.ndarray:
        """Slice ``z`` as ``(H, W)`` uint8 0/1, unpacking only its own bytes."""
        _, height, width = self.shape
        first = z * height * width
        begin, skip = divmod(first, 8)
        end = (first + height * width + 7) // 8 + 1
        bits = np.unpackbits(self.packed[begin:end])[skip : skip + height * width]
        return bits.reshape(height, width)


class ResultStore:
    """Masks of recent results, least recently used evicted first (by count and by bytes)."""

    def __init__(self, max_results: int, max_bytes: int) -> None:
        self.max_results = max_results
        self.max_bytes = max_bytes
        self._items: collections.OrderedDict[str, list[StoredCase]] = collections.OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def _size(cases: list[StoredCase]) -> int:
        return sum(c.packed.nbytes for c in cases)

    def put(self, cases: list[Case]) -> str:
        stored = []
        for c in cases:
            assert c.mask is not None, "cases are stored once segmented"
            shape = (int(c.mask.shape[0]), int(c.mask.shape[1]), int(c.mask.shape[2]))
            stored.append(StoredCase(c.name, shape, np.packbits(c.mask), c.slice_names, c.reference))
        key = secrets.token_urlsafe(16)
        with self._lock:
            self._items[key] = stored
            while len(self._items) > self.max_results or (
                len(self._items) > 1 and sum(self._size(v) for v in self._items.values()) > self.max_bytes
            ):
                self._items.popitem(last=False)
        return key

    def get(self, key: str) -> list[StoredCase]:
        with self._lock:
            if key not in self._items:
                reject(
                    404, f"no result {key!r}: unknown, or evicted after {self.max_results} newer results; segment again"
                )
            self._items.move_to_end(key)
            return self._items[key]
