"""``sam2trt eval``: DAVIS 2017 J&F (sam2trt/metrics) against hand-computed values and the official code's.

The official values (tests/data/davis_fixture/official.json) were computed by
davisvideochallenge/davis2017-evaluation on the fixture's masks
(scripts/davis_fixture.py says how). Everything here is NumPy/OpenCV: no torch, no model.
"""

from __future__ import annotations

import csv
import io
import json
import math
import pathlib

import numpy as np
import pytest
from PIL import Image

from sam2trt.cli import main
from sam2trt.errors import InputError
from sam2trt.metrics.davis import (boundary_f_measure, boundary_map, boundary_tolerance, decay_bins, disk,
                                   region_similarity, statistics)
from sam2trt.metrics.evaluate import evaluate
from sam2trt.video.coco import CocoWriter
from sam2trt.video.writers import MaskPngWriter

FIXTURE = pathlib.Path(__file__).parent / "data" / "davis_fixture"


def square(h, w, rows, cols) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[rows[0]:rows[1], cols[0]:cols[1]] = True
    return m


def write_pngs(folder: pathlib.Path, label_maps: list[np.ndarray]) -> pathlib.Path:
    """sam2trt's own --masks-dir layout, through its writer."""
    writer = MaskPngWriter(folder)
    for i, lm in enumerate(label_maps):
        writer.write(i, lm.astype(np.uint8))
    writer.close()
    return folder


def write_coco(path: pathlib.Path, label_maps: list[np.ndarray], ids=(1, 3)) -> pathlib.Path:
    """sam2trt's own --coco layout, through its writer (every id on every frame, empty or not)."""
    h, w = label_maps[0].shape
    writer = CocoWriter(path, "clip.mp4", w, h)
    for i, lm in enumerate(label_maps):
        writer.write(i, lm.astype(np.uint8), list(ids), [1.0] * len(ids))
    writer.close()
    return path


def fixture_maps(kind: str) -> list[np.ndarray]:
    return [np.array(Image.open(p)) for p in sorted((FIXTURE / kind).glob("*.png"))]


def run(args, capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


# ----------------------------------------------------------------- the measures, by hand
def test_boundary_map_is_the_ring_offset_towards_the_origin():
    seg = square(6, 6, (2, 4), (2, 4))
    want = np.zeros((6, 6), bool)
    want[1:4, 1:4] = True
    want[2, 2] = False  # a pixel whose east, south and south-east neighbours all equal it
    assert np.array_equal(boundary_map(seg), want)
    assert not boundary_map(np.ones((5, 7), bool)).any()  # a full mask has no boundary


def test_disk_and_tolerance():
    assert disk(2).tolist() == [[0, 0, 1, 0, 0], [0, 1, 1, 1, 0], [1, 1, 1, 1, 1], [0, 1, 1, 1, 0], [0, 0, 1, 0, 0]]
    assert boundary_tolerance(480, 854) == 8  # DAVIS 480p: ceil(0.008 * 979.65)
    assert boundary_tolerance(6, 8) == 1 and boundary_tolerance(1000, 1000) == math.ceil(0.008 * 1000 * 2 ** 0.5)


def test_hand_computed_j_and_f():
    gt = square(6, 8, (2, 4), (2, 4))
    shifted1, shifted2 = square(6, 8, (2, 4), (3, 5)), square(6, 8, (2, 4), (4, 6))
    assert region_similarity(gt, shifted1) == pytest.approx(2 / 6)
    assert boundary_f_measure(gt, shifted1) == 1.0  # every boundary pixel within 1 px (the disk) of the other's
    assert region_similarity(gt, shifted2) == 0.0
    # 3 of each ring's 8 pixels lie 2 px from the other ring: P = R = 5/8
    assert boundary_f_measure(gt, shifted2) == pytest.approx(5 / 8)
    assert boundary_f_measure(gt, gt) == 1.0 and region_similarity(gt, gt) == 1.0


def test_empty_masks():
    empty, gt = np.zeros((6, 8), bool), square(6, 8, (2, 4), (2, 4))
    assert region_similarity(empty, empty) == 1.0 and boundary_f_measure(empty, empty) == 1.0
    assert region_similarity(gt, empty) == 0.0 and boundary_f_measure(gt, empty) == 0.0  # P 1, R 0
    assert region_similarity(empty, gt) == 0.0 and boundary_f_measure(empty, gt) == 0.0  # P 0, R 1


def test_void_pixels_are_left_out():
    gt = square(6, 8, (2, 4), (2, 4))
    pred = square(6, 8, (2, 4), (2, 5))  # two more pixels, in column 4
    void = square(6, 8, (0, 6), (4, 5))
    assert region_similarity(gt, pred) == pytest.approx(4 / 6)
    assert region_similarity(gt, pred, void) == 1.0
    assert boundary_f_measure(gt, pred, void) == 1.0
    assert region_similarity(np.zeros_like(gt), void, void) == 1.0  # nothing outside void: both empty


def test_recall_and_decay_on_a_constructed_sequence():
    values = [1.0, 1.0, 0.9, 0.8, 0.6, 0.4, 0.2, 0.0]
    assert decay_bins(8) == [(0, 3), (2, 5), (4, 6), (5, 8)]  # edges round(linspace(1, 8, 5)) - 1, inclusive
    mean, recall, decay = statistics(values)
    assert mean == pytest.approx(4.9 / 8)
    assert recall == 5 / 8  # 0.5 itself would not count: strictly above
    assert decay == pytest.approx((1.0 + 1.0 + 0.9) / 3 - (0.4 + 0.2 + 0.0) / 3)
    assert statistics([0.5, 0.5]) == (0.5, 0.0, 0.0)
    assert decay_bins(1) == [(0, 1)] * 4
    with pytest.raises(ValueError):
        statistics([])


# ----------------------------------------------------------------- sequences
def test_first_and_last_frame_convention(tmp_path, capsys):
    gt = [square(20, 20, (5, 10), (5, 10)).astype(np.uint8) for _ in range(10)]
    pred = [m.copy() for m in gt]
    pred[0][:] = 0
    pred[9][:] = 0
    write_pngs(tmp_path / "gt", gt)
    write_pngs(tmp_path / "pred", pred)
    semi = evaluate(tmp_path / "pred", tmp_path / "gt")
    assert semi.videos[0].frames == list(range(1, 9)) and semi.summary()["J&F-Mean"] == 1.0
    every = evaluate(tmp_path / "pred", tmp_path / "gt", all_frames=True)
    assert every.summary()["J-Mean"] == pytest.approx(0.8) and every.summary()["F-Mean"] == pytest.approx(0.8)
    assert every.worst() == {"video": "gt", "object": 1, "frame": 0, "J": 0.0, "F": 0.0}
    code, out, _ = run(["eval", tmp_path / "pred", tmp_path / "gt", "--all-frames", "--json"], capsys)
    assert code == 0 and json.loads(out)["global"]["J&F-Mean"] == pytest.approx(0.8)
    assert json.loads(out)["frames"] == "all"


def test_recall_and_decay_through_evaluate(tmp_path):
    gt = [square(20, 20, (5, 10), (5, 10)).astype(np.uint8) for _ in range(10)]
    pred = [m if i <= 4 else np.zeros_like(m) for i, m in enumerate(gt)]  # lost after frame 4
    write_pngs(tmp_path / "gt", gt)
    write_pngs(tmp_path / "pred", pred)
    s = evaluate(tmp_path / "pred", tmp_path / "gt").videos[0].objects[0].summary()
    # frames 1..8 count: J = 1, 1, 1, 1, 0, 0, 0, 0
    assert (s["J-Mean"], s["J-Recall"], s["J-Decay"]) == (0.5, 0.5, 1.0)
    assert (s["F-Mean"], s["F-Recall"], s["F-Decay"]) == (0.5, 0.5, 1.0)


def test_non_contiguous_ids_are_the_objects(tmp_path):
    gt, pred = [], []
    for i in range(5):
        g = np.zeros((20, 20), np.uint8)
        g[2:6, 2:6] = 2
        g[10:14, 10:14] = 7
        p = g.copy()
        p[p == 7] = 0 if i == 2 else 7  # object 7 lost on frame 2
        gt.append(g)
        pred.append(p)
    write_pngs(tmp_path / "gt", gt)
    write_pngs(tmp_path / "pred", pred)
    video = evaluate(tmp_path / "pred", tmp_path / "gt").videos[0]
    assert [o.obj_id for o in video.objects] == [2, 7]  # not 1..7: unused ids are no objects
    assert video.objects[1].j.tolist() == [1.0, 0.0, 1.0]
    assert video.summary()["J-Mean"] == pytest.approx((1.0 + 2 / 3) / 2)


def test_an_object_seen_only_on_the_first_frame_counts(tmp_path):
    gt = [np.zeros((20, 20), np.uint8) for _ in range(5)]
    gt[0][2:6, 2:6] = 1
    gt[2][10:14, 10:14] = 2
    write_pngs(tmp_path / "gt", gt)
    write_pngs(tmp_path / "pred", [np.zeros((20, 20), np.uint8)] * 5)
    objs = evaluate(tmp_path / "pred", tmp_path / "gt").videos[0].objects
    assert [o.obj_id for o in objs] == [1, 2]
    assert objs[0].j.tolist() == [1.0, 1.0, 1.0] and objs[1].j.tolist() == [1.0, 0.0, 1.0]


# ----------------------------------------------------------------- the official code's values
def test_matches_the_official_code_on_the_fixture():
    ref = json.loads((FIXTURE / "official.json").read_text())["objects"]
    for all_frames in (False, True):
        for void_as_background in (False, True):
            report = evaluate(FIXTURE / "pred", FIXTURE / "gt", all_frames=all_frames,
                              void_as_background=void_as_background)
            frames = slice(None) if all_frames else slice(1, -1)
            for obj in report.videos[0].objects:
                want = ref[str(obj.obj_id)]
                suffix = "" if void_as_background else "_void"
                np.testing.assert_allclose(obj.j, np.array(want["J" + suffix])[frames], rtol=0, atol=1e-12)
                np.testing.assert_allclose(obj.f, np.array(want["F" + suffix])[frames], rtol=0, atol=1e-12)
                stats = {(False, False): "stats_semi_void", (False, True): "stats_semi",
                         (True, True): "stats_all"}.get((all_frames, void_as_background))
                if stats:  # the official db_statistics of the same per-frame values
                    s = obj.summary()
                    np.testing.assert_allclose([s["J-Mean"], s["J-Recall"], s["J-Decay"]], want[stats]["J"], atol=1e-12)
                    np.testing.assert_allclose([s["F-Mean"], s["F-Recall"], s["F-Decay"]], want[stats]["F"], atol=1e-12)
    assert [o.obj_id for o in report.videos[0].objects] == [1, 3]


def test_matches_the_official_evaluation_script_in_the_davis_layout():
    """DAVISEvaluation (semi-supervised) on davis/: the same per-object rows; its global row differs only by id 2.

    The official script takes objects 1..max id of the first ground-truth frame, so the unused id 2
    is an object there (empty everywhere: J = F = 1); here only ids that occur are objects.
    """
    ref = json.loads((FIXTURE / "official.json").read_text())["evaluation"]
    davis = FIXTURE / "davis"
    report = evaluate(davis / "results", davis / "Annotations" / "480p", void_as_background=True)
    assert [v.name for v in report.videos] == ["clip"] and [o.obj_id for o in report.videos[0].objects] == [1, 3]
    for obj, row in zip(report.videos[0].objects, (0, 2)):
        s = obj.summary()
        for measure, values in ref["per_object"].items():
            assert s[measure] == pytest.approx(values[row], abs=1e-12), (obj.obj_id, measure)
    assert ref["per_object"]["J-Mean"][1] == 1.0 and ref["per_object"]["F-Mean"][1] == 1.0  # the unused id 2
    ours = report.summary()
    for measure, value in ref["global"].items():
        with_id2 = (2 * ours[measure] + (1.0 if measure.endswith(("Mean", "Recall")) else 0.0)) / 3
        assert with_id2 == pytest.approx(value, abs=1e-12), measure


def test_png_and_coco_give_the_same_numbers(tmp_path):
    gt_maps, pred_maps = fixture_maps("gt"), fixture_maps("pred")
    write_pngs(tmp_path / "pred_png", pred_maps)
    write_coco(tmp_path / "pred.json", pred_maps)
    write_coco(tmp_path / "gt.json", [np.where(m == 255, 0, m) for m in gt_maps])  # COCO has no void
    base = json.dumps(evaluate(FIXTURE / "pred", FIXTURE / "gt").summary())
    assert json.dumps(evaluate(tmp_path / "pred_png", FIXTURE / "gt").summary()) == base
    assert json.dumps(evaluate(tmp_path / "pred.json", FIXTURE / "gt").summary()) == base
    no_void = json.dumps(evaluate(FIXTURE / "pred", FIXTURE / "gt", void_as_background=True).summary())
    assert json.dumps(evaluate(tmp_path / "pred.json", tmp_path / "gt.json").summary()) == no_void
    assert json.dumps(evaluate(FIXTURE / "pred", tmp_path / "gt.json").summary()) == no_void
    assert no_void != base


def test_a_folder_of_sequences(tmp_path):
    for seq in ("a", "b"):
        (tmp_path / "gt").mkdir(exist_ok=True)
        (tmp_path / "gt" / seq).symlink_to(FIXTURE / "gt")
    (tmp_path / "pred").mkdir()
    (tmp_path / "pred" / "a").symlink_to(FIXTURE / "pred")
    write_coco(tmp_path / "pred" / "b.json", fixture_maps("gt"))  # perfect (void aside)
    report = evaluate(tmp_path / "pred", tmp_path / "gt")
    assert [v.name for v in report.videos] == ["a", "b"]
    a, b = report.videos[0].summary(), report.videos[1].summary()
    assert b["J-Mean"] == 1.0 and report.summary()["J-Mean"] == pytest.approx((a["J-Mean"] + 1.0) / 2)
    (tmp_path / "pred" / "b.json").unlink()
    with pytest.raises(InputError, match="no results for sequence b"):
        evaluate(tmp_path / "pred", tmp_path / "gt")


# ----------------------------------------------------------------- the command
def test_cli_table_json_and_csv(capsys):
    code, out, _ = run(["eval", FIXTURE / "pred", FIXTURE / "gt"], capsys)
    assert code == 0 and "J&F" in out and "worst J 0.0000" in out
    code, out, _ = run(["eval", FIXTURE / "pred", FIXTURE / "gt", "--json"], capsys)
    doc = json.loads(out)
    assert code == 0 and [o["id"] for o in doc["videos"][0]["objects"]] == [1, 3]
    assert doc["worst"] == {"video": "gt", "object": 3, "frame": 4, "J": 0.0, "F": 0.0}
    code, out, _ = run(["eval", FIXTURE / "pred", FIXTURE / "gt", "--csv"], capsys)
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and [(r["video"], r["object"]) for r in rows] == [("gt", "1"), ("gt", "3"), ("gt", ""),
                                                                        ("Global", "")]
    assert float(rows[2]["J&F-Mean"]) == pytest.approx(doc["global"]["J&F-Mean"], abs=1e-6)


def test_cli_always_recomputes(tmp_path, capsys):
    pred = tmp_path / "pred"
    write_pngs(pred, fixture_maps("pred"))
    for name in ("results.csv", "global_results-val.csv", "per-sequence_results-val.csv"):
        (pred / name).write_text("J&F-Mean\n0.999\n")
    code, out, _ = run(["eval", pred, FIXTURE / "gt", "--json"], capsys)
    assert code == 0 and json.loads(out)["global"] == evaluate(FIXTURE / "pred", FIXTURE / "gt").summary()
    assert (pred / "results.csv").read_text() == "J&F-Mean\n0.999\n"  # read nothing, wrote nothing


def bad_input_cases(tmp_path: pathlib.Path) -> dict:
    gt = write_pngs(tmp_path / "gt", [square(10, 10, (2, 5), (2, 5)).astype(np.uint8)] * 4)
    big = write_pngs(tmp_path / "big", [square(10, 12, (2, 5), (2, 5)).astype(np.uint8)] * 4)
    short = write_pngs(tmp_path / "short", [square(10, 10, (2, 5), (2, 5)).astype(np.uint8)] * 2)
    extra = write_pngs(tmp_path / "extra", [np.full((10, 10), 9, np.uint8)] * 4)
    rgb = tmp_path / "rgb"
    rgb.mkdir()
    for i in range(4):
        Image.new("RGB", (10, 10)).save(rgb / f"{i:05d}.png")
    broken = tmp_path / "broken"
    broken.mkdir()
    for i in range(4):
        (broken / f"{i:05d}.png").write_bytes(b"\x89PNG not really")
    (tmp_path / "bad.json").write_text("{\"images\": 3}")
    return {"size": (big, gt, "is 12x10 but"), "missing": (short, gt, "lacks 1 of the 2 evaluated frames"),
            "ids": (extra, gt, "object id(s) 9"), "rgb": (rgb, gt, "not an indexed mask"),
            "broken": (broken, gt, "cannot read"), "json": (tmp_path / "bad.json", gt, "not a COCO results file"),
            "absent": (tmp_path / "nope", gt, "does not exist"), "frames": (gt, short, "add --all-frames")}


@pytest.mark.parametrize("case", ["size", "missing", "ids", "rgb", "broken", "json", "absent", "frames"])
def test_cli_bad_input_is_one_line_and_exit_3(tmp_path, capsys, case):
    pred, gt, text = bad_input_cases(tmp_path)[case]
    code, out, err = run(["eval", pred, gt], capsys)
    assert code == 3 and out == ""
    assert err.count("\n") == 1 and err.startswith("error: ") and text in err, err


def test_cli_usage_error_is_exit_2(capsys):
    code, out, err = run(["eval", FIXTURE / "pred", FIXTURE / "gt", "--json", "--csv"], capsys)
    assert code == 2 and out == "" and err.startswith("error: --json and --csv") and err.count("\n") == 1
    code, _, err = run(["eval", FIXTURE / "pred"], capsys)
    assert code == 2 and "GT" in err
