"""Official SAM 2 / SAM 2.1 checkpoints: Meta's public URLs and a local cache."""

from __future__ import annotations

import os
import pathlib
import shutil
import urllib.error
import urllib.request
from typing import Callable

from sam2trt.fileio import atomic_output
from sam2trt.errors import InputError, RuntimeFailure

_BASE_21 = "https://dl.fbaipublicfiles.com/segment_anything_2/092824/"
_BASE_20 = "https://dl.fbaipublicfiles.com/segment_anything_2/072824/"
CHECKPOINT_URLS = {
    "sam2.1_hiera_t": _BASE_21 + "sam2.1_hiera_tiny.pt",
    "sam2.1_hiera_s": _BASE_21 + "sam2.1_hiera_small.pt",
    "sam2.1_hiera_b+": _BASE_21 + "sam2.1_hiera_base_plus.pt",
    "sam2.1_hiera_l": _BASE_21 + "sam2.1_hiera_large.pt",
    "sam2_hiera_t": _BASE_20 + "sam2_hiera_tiny.pt",
    "sam2_hiera_s": _BASE_20 + "sam2_hiera_small.pt",
    "sam2_hiera_b+": _BASE_20 + "sam2_hiera_base_plus.pt",
    "sam2_hiera_l": _BASE_20 + "sam2_hiera_large.pt",
}


def default_cache_dir() -> pathlib.Path:
    """``$XDG_CACHE_HOME/sam2trt/checkpoints`` (``~/.cache/...`` by default)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return pathlib.Path(base) / "sam2trt" / "checkpoints"


def download_checkpoint(name: str, cache_dir: str | os.PathLike | None = None,
                        log: Callable[[str], None] = print) -> pathlib.Path:
    """Download the official checkpoint for config ``name`` unless already cached.

    The file is streamed to a temporary name in the cache folder and renamed when
    complete, so an interrupted download never looks finished.

    Returns:
        Path of the ``.pt`` file.
    Raises:
        InputError: unknown name.
        RuntimeFailure: network or disk error.
    """
    if name not in CHECKPOINT_URLS:
        raise InputError(f"no official checkpoint for {name!r}: use one of {', '.join(CHECKPOINT_URLS)}")
    url = CHECKPOINT_URLS[name]
    folder = pathlib.Path(cache_dir) if cache_dir else default_cache_dir()
    target = folder / url.rsplit("/", 1)[1]
    if target.is_file():
        log(f"cached: {target}")
        return target
    folder.mkdir(parents=True, exist_ok=True)
    log(f"downloading {url}")
    try:
        with atomic_output(target) as tmp, open(tmp, "wb") as f, urllib.request.urlopen(url, timeout=60) as r:
            shutil.copyfileobj(r, f, length=1 << 20)
    except (urllib.error.URLError, OSError) as e:
        raise RuntimeFailure(f"download of {url} failed ({e}): check the network, or download it by hand into {folder}") from None
    return target
