"""Tracker core: memory bank + per-frame step, pure NumPy and backend-agnostic."""

from sam2trt.tracker.core import (
    FrameOutput, FrameStepper, ImageFeatures, ObjectResult, encode_conditioning, needs_conditioning, track_frames,
)
from sam2trt.tracker.memory_bank import FrameMemory, MemorySelection, ObjectMemory, prune, select_memory
from sam2trt.tracker.prompts import ObjectPrompt, parse_box, parse_point

__all__ = [
    "FrameMemory", "FrameOutput", "FrameStepper", "ImageFeatures", "MemorySelection", "ObjectMemory",
    "ObjectPrompt", "ObjectResult", "encode_conditioning", "needs_conditioning", "parse_box", "parse_point", "prune", "select_memory", "track_frames",
]
