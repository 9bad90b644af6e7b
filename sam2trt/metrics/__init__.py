"""Segmentation quality: DAVIS 2017 J&F (:mod:`.davis`, :mod:`.evaluate`), read from PNG or COCO results (:mod:`.masks`)."""

from .davis import boundary_f_measure, boundary_map, region_similarity, statistics
from .evaluate import MEASURES, EvalReport, ObjectScores, VideoScores, evaluate, evaluate_video
from .masks import open_masks

__all__ = ["MEASURES", "EvalReport", "ObjectScores", "VideoScores", "boundary_f_measure", "boundary_map", "evaluate",
           "evaluate_video", "open_masks", "region_similarity", "statistics"]
