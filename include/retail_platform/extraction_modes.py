"""How a table is extracted: the contract declares it, the lake and compaction act on it.

Kept below both rooms (the contract imports it, and so does the lake, which the contract's
neighbours build on) so that neither has to import the other.
"""

from __future__ import annotations

from enum import StrEnum


class ExtractionMode(StrEnum):
    FULL = "full"  # the whole table every batch
    INCREMENTAL = "incremental"  # rows whose cursor (an updated_at-style timestamp) moved, with a lookback
    APPEND_ONLY = "append_only"  # rows whose monotonic key is past the watermark, with a lookback in keys
