"""``sam2trt eval`` output: a rich table, a JSON document, or CSV rows of an :class:`~sam2trt.metrics.evaluate.EvalReport`.

Every form carries the same numbers: one row per object (``video``, ``object``),
one per video (``object`` empty) and a global one (``video`` ``Global``), each
with the :data:`~sam2trt.metrics.evaluate.MEASURES` as fractions in [0, 1]
(Decay may be negative).
"""

from __future__ import annotations

import csv
import io

from .evaluate import MEASURES, EvalReport


def report_rows(report: EvalReport) -> list[dict]:
    """Rows ``{"video", "object", "frames", <measure>: float}``: per object, then per video, then the global row."""
    rows = []
    for v in report.videos:
        for o in v.objects:
            rows.append({"video": v.name, "object": o.obj_id, "frames": len(o.frames), **o.summary()})
        rows.append({"video": v.name, "object": "", "frames": len(v.frames), **v.summary()})
    rows.append({"video": "Global", "object": "", "frames": sum(len(v.frames) for v in report.videos),
                 **report.summary()})
    return rows


def report_json(report: EvalReport) -> dict:
    """JSON-ready: ``{"frames": "all" | "semi-supervised", "global": {...}, "worst": {...}, "videos": [...]}``.

    Each video: ``{"name", "frames", <measures>, "objects": [{"id", <measures>}]}``; ``worst`` is
    :meth:`~sam2trt.metrics.evaluate.EvalReport.worst`.
    """
    worst = dict(report.worst())
    if worst:
        worst["frame"] = worst["frame"] if isinstance(worst["frame"], int) else str(worst["frame"])
    return {"frames": "all" if report.all_frames else "semi-supervised", "global": report.summary(), "worst": worst,
            "videos": [{"name": v.name, "frames": len(v.frames), **v.summary(),
                        "objects": [{"id": o.obj_id, **o.summary()} for o in v.objects]} for v in report.videos]}


def report_csv(report: EvalReport) -> str:
    """CSV text with a header: ``video,object,frames,J&F-Mean,...,F-Decay`` and :func:`report_rows` (6 decimals)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["video", "object", "frames", *MEASURES], lineterminator="\n")
    writer.writeheader()
    for row in report_rows(report):
        writer.writerow({k: f"{v:.6f}" if isinstance(v, float) else v for k, v in row.items()})
    return buf.getvalue()


def report_table(report: EvalReport):
    """A :class:`rich.table.Table` of :func:`report_rows` (3 decimals; the global row only with several videos),
    video rows bold, and a caption naming the frames that counted and the worst frame-object J."""
    from rich import box
    from rich.table import Table

    worst = report.worst()
    caption = ("every frame" if report.all_frames else "first and last frame left out (semi-supervised)")
    if worst:
        caption += f"; worst J {worst['J']:.4f}: {worst['video']} object {worst['object']} frame {worst['frame']}"
    table = Table(title="DAVIS 2017 J&F", caption=caption, box=box.SIMPLE_HEAD, pad_edge=False)
    for name in ("video", "object", "frames", *MEASURES):
        header = {"object": "id"}.get(name, name.replace("-", "\n"))
        table.add_column(header, justify="left" if name == "video" else "right", no_wrap=name != "video")
    rows = report_rows(report)
    for row in rows[:-1] if len(report.videos) == 1 else rows:  # one video: its row is the global one
        cells = [str(row["video"]), str(row["object"]), str(row["frames"])] + [f"{row[m]:.3f}" for m in MEASURES]
        table.add_row(*cells, style="bold" if row["object"] == "" else None)
    return table
