"""Error signatures (see ``loopwright.runner.signature``, where they are computed as runs end).

Kept here as the history package's public name: the review clusters failures on
:func:`signature` and shows :func:`normalise` as the cluster's label.
"""

from __future__ import annotations

from loopwright.runner.signature import (
    SAMPLE_CHARS,
    SIG_HEX,
    normalise,
    sample,
    signature,
    split_type,
)

__all__ = ["SAMPLE_CHARS", "SIG_HEX", "normalise", "sample", "signature", "split_type"]
