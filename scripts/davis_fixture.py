"""Write the J&F test fixture (tests/data/davis_fixture) and, given the official code, its reference values.

    python scripts/davis_fixture.py tests/data/davis_fixture                # the PNG masks only
    PYTHONPATH=/path/to/davis2017-evaluation python scripts/davis_fixture.py \\
        tests/data/davis_fixture --official                                 # also official.json

The fixture is one 10-frame 90x120 video: ground truth ``gt/`` with objects 1
and 3 (id 2 unused), a band of void (255) pixels, object 3 entering on frame 4;
results ``pred/`` with the objects moved, grown and shrunk, object 3 found
late and lost once. ``davis/`` holds the same video in the official layout
(``Annotations/480p/clip``, ``results/clip``) with object 3 present from frame
0, as the official script needs (it takes its objects from the first frame).
``official.json`` holds what davisvideochallenge/davis2017-evaluation
(``davis2017.metrics``, ``davis2017.utils``, ``davis2017.evaluation``; needs
its requirements: numpy, opencv, scikit-image, scipy, tqdm) computes: per object the
per-frame J and F with and without the void mask, and ``db_statistics`` of the
semi-supervised frames (first and last left out) and of all frames; and the
``DAVISEvaluation`` rows of ``davis/`` (semi-supervised: no void mask).
"""

from __future__ import annotations

import argparse
import json
import pathlib

import cv2
import numpy as np
from PIL import Image

H, W, FRAMES = 90, 120, 10


def draw(frame: int, pred: bool, enter: int = 4) -> np.ndarray:
    """One frame's ``[H, W]`` uint8 label map (ground truth, or the results when ``pred``); object 3 from ``enter``."""
    labels = np.zeros((H, W), np.uint8)
    dx = frame * 4 + (frame % 3 if pred else 0)
    grow = (frame % 4) - 1 if pred else 0
    cv2.ellipse(labels, (20 + dx, 40), (12 + grow, 18 + grow), 0, 0, 360, 1, -1)
    if frame >= enter and not (pred and frame in (4, 7)):
        cv2.rectangle(labels, (70, 10 + frame), (100 - (frame % 2 if pred else 0), 40 + frame), 3, -1)
    if pred and frame == 6:
        labels[60:70, 90:110] = 3  # a false positive of object 3
    if not pred:
        labels[:, 30:33][labels[:, 30:33] == 0] = 255  # void band
    return labels


def write_pngs(folder: pathlib.Path, pred: bool, enter: int = 4) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(FRAMES):
        img = Image.fromarray(draw(i, pred, enter))
        img.putpalette(np.random.default_rng(0).integers(0, 255, 768, dtype=np.uint8).tobytes())
        img.save(folder / f"{i:05d}.png")


def official_values(root: pathlib.Path) -> dict:
    from davis2017.metrics import db_eval_boundary, db_eval_iou
    from davis2017.utils import db_statistics

    gt = np.stack([np.array(Image.open(root / "gt" / f"{i:05d}.png")) for i in range(FRAMES)])
    pred = np.stack([np.array(Image.open(root / "pred" / f"{i:05d}.png")) for i in range(FRAMES)])
    void = gt == 255
    out = {}
    for oid in (1, 3):
        g, p = (gt == oid).astype(np.uint8), (pred == oid).astype(np.uint8)
        j_void, f_void = db_eval_iou(g, p, void), db_eval_boundary(g, p, void)
        j, f = db_eval_iou(g, p), db_eval_boundary(g, p)
        out[str(oid)] = {"J": j.tolist(), "F": f.tolist(), "J_void": j_void.tolist(), "F_void": f_void.tolist(),
                         "stats_semi": {"J": list(db_statistics(j[1:-1])), "F": list(db_statistics(f[1:-1]))},
                         "stats_all": {"J": list(db_statistics(j)), "F": list(db_statistics(f))},
                         "stats_semi_void": {"J": list(db_statistics(j_void[1:-1])),
                                             "F": list(db_statistics(f_void[1:-1]))}}
    return out


def official_evaluation(root: pathlib.Path) -> dict:
    """``DAVISEvaluation`` (semi-supervised) on ``root/davis``: the per-object and global rows of the official script."""
    import tempfile

    from davis2017.evaluation import DAVISEvaluation

    with tempfile.TemporaryDirectory() as tmp:
        davis = pathlib.Path(tmp)
        (davis / "Annotations" / "480p").mkdir(parents=True)
        (davis / "Annotations" / "480p" / "clip").symlink_to((root / "davis" / "Annotations" / "480p" / "clip").resolve())
        (davis / "JPEGImages" / "480p" / "clip").mkdir(parents=True)
        for i in range(FRAMES):
            Image.new("RGB", (W, H)).save(davis / "JPEGImages" / "480p" / "clip" / f"{i:05d}.jpg")
        (davis / "ImageSets" / "2017").mkdir(parents=True)
        (davis / "ImageSets" / "2017" / "val.txt").write_text("clip\n")
        res = DAVISEvaluation(str(davis), "semi-supervised", "val").evaluate(str(root / "davis" / "results"))
    j, f = res["J"], res["F"]
    rows = {m: [float(v) for v in j[k]] for k, m in (("M", "J-Mean"), ("R", "J-Recall"), ("D", "J-Decay"))}
    rows.update({m: [float(v) for v in f[k]] for k, m in (("M", "F-Mean"), ("R", "F-Recall"), ("D", "F-Decay"))})
    glob = {m: float(np.mean(v)) for m, v in rows.items()}
    glob["J&F-Mean"] = (glob["J-Mean"] + glob["F-Mean"]) / 2  # as evaluation_method.py
    return {"per_object": rows, "global": glob}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("root", type=pathlib.Path)
    ap.add_argument("--official", action="store_true", help="also write official.json (needs davis2017 importable)")
    args = ap.parse_args()
    write_pngs(args.root / "gt", pred=False)
    write_pngs(args.root / "pred", pred=True)
    write_pngs(args.root / "davis" / "Annotations" / "480p" / "clip", pred=False, enter=0)
    write_pngs(args.root / "davis" / "results" / "clip", pred=True, enter=0)
    if args.official:
        values = {"source": "davisvideochallenge/davis2017-evaluation ac7c43fca936f9722837b7fbd337d284ba37004b",
                  "objects": official_values(args.root), "evaluation": official_evaluation(args.root)}
        (args.root / "official.json").write_text(json.dumps(values, indent=1) + "\n")


if __name__ == "__main__":
    main()
