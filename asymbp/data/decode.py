"""The options every image loader shares, as one value: how its images are decoded (size,
channels, fit), where the decoded tensors are cached, and the counts a correct copy yields.

A loader that takes a parameter `decoding` gets them as a `Decoding`; its config still states
them as flat keys (conf/dataset/_image_base.yaml: image_size, channels, fit, cache, cache_dir,
and its own expect block), which `register_dataset` gathers into it (asymbp.data.registry).
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass
from typing import Literal

from asymbp.data.base import Expect
from asymbp.data.formats.images import FITS
from asymbp.registry import PositiveInt


@dataclass(frozen=True)
class Decoding:
    """image_size, channels: those of the decoded images (None, for the array sets: as stored);
    fit: "stretch" or "crop" to the square; expect: the guard; cache_dir: where the decoded
    tensors are kept (None: not cached)."""

    image_size: int | None
    channels: int | None
    fit: str
    expect: Expect
    cache_dir: str | os.PathLike | None

    @classmethod
    def from_config(
        cls,
        image_size: PositiveInt | None,
        channels: Literal[1, 3] | None,
        fit: Literal[FITS],
        expect: Expect | None,
        cache: bool,
        cache_dir: str | os.PathLike | None,
    ) -> Decoding:
        """The Decoding of a dataset config's shared keys (cache false: cache_dir None)."""
        return cls(image_size, channels, fit, expect, cache_dir if cache else None)


#: The config keys a Decoding is made of, as the parameters of Decoding.from_config.
DECODING_PARAMETERS = tuple(inspect.signature(Decoding.from_config).parameters.values())
DECODING_KEYS = tuple(p.name for p in DECODING_PARAMETERS)
