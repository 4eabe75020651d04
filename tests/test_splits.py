"""The zero-shot split files shipped in jsbir.data.splits: contents, format, matching, random splits."""

from __future__ import annotations

import importlib.resources
from pathlib import Path

import numpy as np
import pytest

from jsbir.data import splits

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "splits"


def test_shipped_splits_and_sizes():
    assert splits.available_splits() == ("doodle2search30", "eccv21", "sake25", "sake30")
    assert splits.available_class_lists() == ("quickdraw", "quickdraw345", "sketchy", "tuberlin")
    sizes = {"eccv21": 21, "sake25": 25, "sake30": 30, "doodle2search30": 30}
    for name, size in sizes.items():
        names = splits.load_split(name)
        assert len(names) == len(set(names)) == size, name
    for dataset, size in {"sketchy": 125, "tuberlin": 250, "quickdraw": 110, "quickdraw345": 345}.items():
        names = splits.load_classes(dataset)
        assert len(names) == len(set(names)) == size and list(names) == sorted(names), dataset
    assert splits.load_split("eccv21")[:3] == ("bat", "cabin", "cow")
    assert splits.load_split("sake25")[:3] == ("cup", "swan", "harp")
    assert "hot air balloon" in splits.load_split("sake30")  # TU-Berlin folder names keep their spaces
    assert splits.load_split("doodle2search30")[-1] == "fan"
    with pytest.raises(ValueError, match="unknown split 'nope'.*eccv21"):
        splits.load_split("nope")


def test_every_split_class_is_in_its_dataset():
    for split, dataset in (("eccv21", "sketchy"), ("sake25", "sketchy"), ("sake30", "tuberlin"),
                           ("doodle2search30", "quickdraw")):  # fmt: skip
        classes = splits.load_classes(dataset)
        ids = splits.match_classes(classes, splits.load_split(split), split)
        assert len(ids) == len(splits.load_split(split))
    # Doodle2Search writes palm_tree where the QuickDraw-Extended folder is "palm tree".
    quickdraw = splits.load_classes("quickdraw")
    assert "palm tree" in quickdraw and "palm_tree" in splits.load_split("doodle2search30")


def test_files_have_a_source_header_and_one_class_per_line():
    root = importlib.resources.files(splits)
    files = [p for p in root.iterdir() if p.name.endswith(".txt")]
    assert len(files) == 8
    for path in files:
        lines = path.read_text(encoding="utf-8").splitlines()
        assert lines[0].startswith("# ") and len(lines[0]) > 10  # names its source
        assert all(line and line == line.strip() and not line.startswith("#") for line in lines[1:]), path.name
        assert path.read_text(encoding="utf-8").endswith("\n")


@pytest.mark.skipif(not SHARED.is_dir(), reason=f"{SHARED} is absent (no shared data)")
def test_shipped_files_match_their_sources():
    def names(path):
        return splits.parse_class_list((SHARED / path).read_text())

    assert splits.load_split("eccv21") == names("sketchy_unseen21_eccv2018.txt")
    assert splits.load_split("sake25") == names("sketchy_sake_zeroshot1/cname_cid_zero.txt")
    assert splits.load_split("sake30") == names("tuberlin_sake_zeroshot/cname_cid_zero.txt")
    assert splits.load_split("doodle2search30") == names("quickdraw_doodle2search/zeroshot_classes_quickdraw.txt")
    assert splits.load_classes("sketchy") == tuple(sorted(names("sketchy_125_classes.txt")))
    seen = names("tuberlin_sake_zeroshot/cname_cid.txt")
    assert set(splits.load_classes("tuberlin")) == set(seen) | set(splits.load_split("sake30"))


def test_parse_class_list_formats():
    assert splits.parse_class_list("# header\ncat\n\n  dog \nfan") == ("cat", "dog", "fan")
    assert splits.parse_class_list("alarm clock 2\nbus 1\n") == ("alarm clock", "bus")  # SAKE "cname cid"
    assert splits.parse_class_list("bus 1\ncat\n") == ("bus 1", "cat")  # ids only when every line has one


def test_random_split_is_seeded_and_documented():
    classes = [f"c{i:02d}" for i in range(40)][::-1]
    chosen = splits.random_split(classes, 25, 0)
    ordered = sorted(classes)
    expected = sorted(ordered[i] for i in np.random.default_rng(0).choice(40, size=25, replace=False))
    assert chosen == tuple(expected) and len(set(chosen)) == 25
    assert splits.random_split(classes, 25, 0) == chosen != splits.random_split(classes, 25, 1)
    assert splits.resolve_split("random25_seed0", classes) == (chosen, "random split 'random25_seed0'")
    with pytest.raises(ValueError, match="0 < N < 40"):
        splits.random_split(classes, 40, 0)


def test_resolve_split_and_matching(tmp_path):
    names, source = splits.resolve_split("eccv21", splits.load_classes("sketchy"))
    assert len(names) == 21 and source.endswith("eccv21.txt")
    mine = tmp_path / "mine.txt"
    mine.write_text("# mine\nHot-Air Balloon\ncat")
    assert splits.resolve_split(str(mine), ()) == (("Hot-Air Balloon", "cat"), str(mine))
    assert splits.match_classes(("cat", "hot air balloon", "zebra"), ("Hot-Air Balloon", "cat"), "x") == (0, 1)
    with pytest.raises(ValueError, match=r"split .*mine\.txt names classes that the data lack: \['cow'\]"):
        splits.match_classes(("cat",), ("cat", "cow"), str(mine))
    with pytest.raises(ValueError, match="unknown split"):
        splits.resolve_split(str(tmp_path / "absent.txt"), ())
