"""Streaming frame sources and output writers.

- :func:`open_frames` / :func:`probe` -- read a video file (PyAV) or a folder of
  JPEG/PNG frames (PIL) as ``(frame_index, rgb uint8 (H, W, 3))``, one at a time.
- :class:`OverlayVideoWriter`, :class:`MaskPngWriter`, :class:`JsonLinesWriter`
  -- outputs written to a temporary sibling and renamed into place when complete.
"""

from .reader import DEFAULT_FPS, FrameSource, VideoInfo, list_frame_files, open_frames, probe
from .writers import (
    JsonLinesWriter,
    MaskPngWriter,
    OverlayVideoWriter,
    davis_palette,
    overlay_masks,
)

__all__ = [
    "DEFAULT_FPS",
    "FrameSource",
    "JsonLinesWriter",
    "MaskPngWriter",
    "OverlayVideoWriter",
    "VideoInfo",
    "davis_palette",
    "list_frame_files",
    "open_frames",
    "overlay_masks",
    "probe",
]
