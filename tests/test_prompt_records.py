"""Prompt records (sam2trt/prompt_records.py): the schema, and following a growing file or a FIFO."""

from __future__ import annotations

import json
import os
import threading
import time

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from sam2trt.errors import InputError
from sam2trt.prompt_records import PromptFollower, parse_prompt_record, read_prompt_records


def rle_of(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def test_box_becomes_corners_on_its_frame():
    rec = parse_prompt_record({"frame": 12, "id": 3, "box": [10, 20, 30, 40]})
    assert (rec.obj_id, rec.frame, rec.remove) == (3, 12, False)
    assert rec.prompt.box == (10.0, 20.0, 40.0, 60.0)
    assert rec.prompt.frame_idx == 12 and rec.prompt.obj_id == 3


def test_points_labels_and_box_together_without_frame():
    rec = parse_prompt_record('{"id": 2, "points": [[5, 6], [7.5, 8]], "labels": [1, 0], "box": [0, 0, 9, 9]}')
    assert rec.frame is None and rec.prompt.frame_idx == 0
    assert rec.prompt.points == ((5.0, 6.0, 1), (7.5, 8.0, 0))
    assert rec.prompt.box == (0.0, 0.0, 9.0, 9.0)
    assert parse_prompt_record({"id": 2, "points": [[1, 2]]}).prompt.points == ((1.0, 2.0, 1),)


@pytest.mark.parametrize("as_list", [False, True])
def test_mask_rle_round_trips(as_list):
    mask = np.zeros((24, 32), bool)
    mask[3:9, 5:20] = True
    rle = rle_of(mask)
    if as_list:  # uncompressed RLE: run lengths in column-major order, starting with background
        flat = mask.reshape(-1, order="F").astype(np.int8)
        bounds = np.concatenate([[0], np.flatnonzero(np.diff(flat)) + 1, [flat.size]])
        rle = {"size": [24, 32], "counts": [int(c) for c in np.diff(bounds)]}
    rec = parse_prompt_record({"id": 4, "mask": rle})
    np.testing.assert_array_equal(rec.prompt.mask, mask)
    assert rec.prompt.box is None and rec.prompt.points == ()


def test_remove():
    rec = parse_prompt_record({"id": 3, "remove": True})
    assert rec.remove and rec.prompt is None and rec.obj_id == 3


@pytest.mark.parametrize("record, words", [
    ("not json", "Expecting value"),
    ("[1, 2]", "JSON object"),
    ({"id": 3}, 'give "box"'),
    ({"box": [1, 2, 3, 4]}, '"id"'),
    ({"id": 0, "box": [1, 2, 3, 4]}, "1..255"),
    ({"id": 256, "box": [1, 2, 3, 4]}, "1..255"),
    ({"id": True, "box": [1, 2, 3, 4]}, "1..255"),
    ({"id": 1, "frame": -1, "box": [1, 2, 3, 4]}, ">= 0"),
    ({"id": 1, "box": [1, 2, 3]}, "4 numbers"),
    ({"id": 1, "box": [1, 2, 0, 4]}, "no area"),
    ({"id": 1, "box": [1, 2, "a", 4]}, "finite numbers"),
    ({"id": 1, "points": [[1, 2]], "labels": [2]}, "labels"),
    ({"id": 1, "labels": [1]}, "without"),
    ({"id": 1, "points": None}, "non-empty list"),
    ({"id": 1, "box": None}, "4 numbers"),
    ({"id": 1, "remove": True, "box": [1, 2, 3, 4]}, "remove"),
    ({"id": 1, "remove": False}, "remove"),
    ({"id": 1, "mask": {"size": [4, 4], "counts": "??"}, "box": [0, 0, 1, 1]}, "cannot be combined"),
    ({"id": 1, "mask": {"size": [4, 4]}}, "COCO RLE"),
    ({"id": 1, "mask": {"size": [4, 4], "counts": [16]}}, "empty"),
    ({"id": 1, "bbox": [1, 2, 3, 4]}, "unknown key"),
])
def test_malformed_record_is_one_line_error_naming_it(record, words):
    with pytest.raises(InputError) as err:
        parse_prompt_record(record, where="p.jsonl:7")
    text = str(err.value)
    assert text.startswith("p.jsonl:7: ") and words in text and "\n" not in text
    assert err.value.exit_code == 3


def test_read_file_names_the_bad_line(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"id": 1, "box": [1, 2, 3, 4]}\n\n{"id": 2, "box": [1, 2]}\n')
    with pytest.raises(InputError, match=r"p\.jsonl:3: "):
        read_prompt_records(path)
    path.write_text('{"id": 1, "box": [1, 2, 3, 4]}\n{"id": 1, "remove": true}\n')
    assert [r.remove for r in read_prompt_records(path)] == [False, True]


def test_follower_tails_a_growing_file_and_warns_on_bad_lines(tmp_path):
    path = tmp_path / "stream.jsonl"
    path.write_text('{"id": 1, "box": [1, 2, 3, 4]}\n')
    warnings: list[str] = []
    with PromptFollower(path, poll_s=0.02, on_warning=warnings.append) as follower:
        assert [r.obj_id for r in follower.poll()] == [1]
        assert follower.poll() == []
        with open(path, "a") as f:
            f.write('{"id": 2, "box": [1, 2')  # half a line: not yet a record
            f.flush()
            assert follower.poll() == []
            f.write(', 3, 4]}\nnot json\n{"id": 3, "remove": true}\n')
        records = follower.poll()
    assert [(r.obj_id, r.remove) for r in records] == [(2, False), (3, True)]
    assert len(warnings) == 1 and warnings[0].startswith(f"{path}:3: ")
    assert follower.poll() == []  # closed


def test_follower_reads_a_fifo_as_writers_come_and_go(tmp_path):
    fifo = tmp_path / "prompts.fifo"
    os.mkfifo(fifo)
    follower = PromptFollower(fifo, poll_s=0.02, on_warning=lambda m: None)  # opens with no writer yet
    got = []

    def consume():
        for rec in follower:
            got.append(rec.obj_id)

    reader = threading.Thread(target=consume)
    reader.start()
    for obj_id in (5, 6):  # two writers, one after the other
        with open(fifo, "w") as w:
            w.write(json.dumps({"id": obj_id, "box": [0, 0, 4, 4]}) + "\n")
    deadline = time.monotonic() + 5
    while len(got) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    t0 = time.monotonic()
    follower.close()
    reader.join(2)
    assert not reader.is_alive() and time.monotonic() - t0 < 1.0
    assert got == [5, 6]


def test_follower_missing_path_is_input_error(tmp_path):
    with pytest.raises(InputError, match="cannot open prompt stream"):
        PromptFollower(tmp_path / "none.jsonl")
