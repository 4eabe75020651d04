"""The validation split and model selection: validation holds only seen classes (or training instances), never a
test image; the best checkpoint follows the named metric."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import bda
from jsbir.data import get_dataset, validation
from jsbir.data.types import DatasetInfo, Images, SbirData
from jsbir.selection import Selector
from jsbir.state import TrainState


def _keys(images: Images) -> set[tuple[int, int]]:
    return set(zip(images.label.tolist(), images.instance_id.tolist(), strict=True))


def test_validation_classes_are_seen_classes_cut_from_the_training_split(tmp_path):
    config = bda.get_config("runlocal")
    config.data.data_dir = str(tmp_path / "tfds")
    plain = config.data.copy_and_resolve_references()
    with plain.unlocked():
        plain.val_fraction = 0.0
    before, data = get_dataset(plain), get_dataset(config.data)
    info = data.info
    assert len(info.validation) == 6 == round(0.2 * len(before.info.seen))  # 20% of the 30 seen classes
    assert set(info.validation) <= set(before.info.seen) and not set(info.validation) & set(info.unseen)
    assert set(info.seen) == set(before.info.seen) - set(info.validation)
    for held, kept, test in (
        (data.val_sketches, data.train_sketches, data.test_sketches),
        (data.val_photos, data.train_photos, data.test_photos),
    ):
        assert set(np.unique(held.label)) == set(info.validation)
        assert not np.isin(held.label, info.unseen).any()
        assert not _keys(held) & _keys(test)  # no test image
        assert not _keys(held) & _keys(kept)  # and no training image
    sketches, photos = data.training_pairs()
    assert not np.isin(sketches.label, info.validation).any() and not np.isin(photos.label, info.validation).any()
    # The inductive class graph joins only the classes still trained on.
    assert not info.class_graph[list(info.validation)].any()
    assert get_dataset(config.data).info.validation == info.validation  # seeded


def _instance_data() -> SbirData:
    ids = np.arange(20)
    images = Images(np.zeros((20, 4, 4, 3), np.uint8), np.zeros(20, np.int32), ids)
    test = Images(np.zeros((5, 4, 4, 3), np.uint8), np.zeros(5, np.int32), np.arange(100, 105))
    info = DatasetInfo("qmul", "official", ("shoe",), (0,), (0,), np.ones((1, 2), np.float32), 4)
    return SbirData(info, images, images, test, test)


def test_instance_level_sets_hold_out_training_instances():
    data = validation.hold_out(_instance_data(), 0.2, seed=0)
    assert data.info.validation == () and len(data.val_sketches) == len(data.val_photos) == 4
    np.testing.assert_array_equal(np.sort(data.val_sketches.instance_id), np.sort(data.val_photos.instance_id))
    assert not set(data.val_photos.instance_id) & set(data.train_photos.instance_id)
    assert not set(data.val_photos.instance_id) & set(data.test_photos.instance_id)
    assert validation.hold_out(_instance_data(), 0.0, seed=0).val_sketches is None
    with pytest.raises(ValueError, match=r"val_fraction must be in \[0, 1\)"):
        validation.hold_out(_instance_data(), 1.0, seed=0)


class _ScriptedEvaluator:
    """Returns the next scripted metrics for each evaluation."""

    def __init__(self, script):
        self.script = iter(script)

    def run(self, state, workdir, tag, write):
        metrics = dict(next(self.script))
        return {"step": int(state.step), "metrics": metrics, "fusion": {"weight": metrics.pop("weight", 0.0)}}


class _Writer:
    def __init__(self):
        self.rows = []

    def write_scalars(self, step, scalars):
        self.rows.append((step, scalars))


@pytest.mark.parametrize(("metric", "best_step"), [("map@all[exact]", 2), ("prec@100[k]", 3)])
def test_best_checkpoint_follows_the_named_metric(tmp_path, metric, best_step):
    script = [  # with the frozen features' fusion weight each validation chose
        {"map@all[exact]": 0.2, "prec@100[k]": 0.1, "weight": 1.0},
        {"map@all[exact]": 0.5, "prec@100[k]": 0.2, "weight": 0.3},
        {"map@all[exact]": 0.3, "prec@100[k]": 0.4, "weight": 0.6},
        {"map@all[exact]": 0.4, "prec@100[k]": 0.3, "weight": 0.0},
    ]
    tx = optax.sgd(0.1)
    state = TrainState.create({"w": jnp.zeros(3)}, {}, tx)
    selector = Selector(_ScriptedEvaluator(script), str(tmp_path), {"method": "toy"}, {}, metric)
    writer = _Writer()
    for step in range(1, 5):
        state = state.replace(step=jnp.int32(step), params={"w": jnp.full(3, float(step))})
        selector(state, str(tmp_path), writer)
    chosen, selection = selector.chosen(state, state)
    best = script[best_step - 1]
    assert selection == {
        "metric": f"val/{metric}",
        "value": best[metric],
        "step": best_step,
        "fusion_weight": best["weight"],
    }
    assert [row[1]["val/fusion_weight"] for row in writer.rows] == [1.0, 0.3, 0.6, 0.0]
    np.testing.assert_array_equal(chosen.params["w"], np.full(3, float(best_step)))
    assert [row[0] for row in writer.rows] == [1, 2, 3, 4] and "val/prec@100[k]" in writer.rows[0][1]
    selector.close()
    # A resumed run reads the best value back and keeps choosing against it.
    again = Selector(_ScriptedEvaluator([{"map@all[exact]": 0.45, "prec@100[k]": 0.35}]), str(tmp_path), {}, {}, metric)
    assert again.value == best[metric] and again.fusion_weight == best["weight"]  # the weight chosen with it
    other = "prec@100[k]" if metric == "map@all[exact]" else "map@all[exact]"
    assert Selector(_ScriptedEvaluator([]), str(tmp_path), {}, {}, other).value == -np.inf  # chosen afresh
    with pytest.raises(KeyError, match=r"select_metric='nope' is not a validation metric"):
        Selector(_ScriptedEvaluator(script), str(tmp_path / "x"), {}, {}, "nope")(state, str(tmp_path), writer)
