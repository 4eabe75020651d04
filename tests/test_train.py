"""End-to-end tests of the trainer on 8 fake CPU devices: loss falls, resume is exact, bad input fails clearly."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from configs import bda
from jsbir import checkpoint, train


def _config(tmp_path, **overrides):
    config = bda.get_config("runlocal")
    config.data.data_dir = str(tmp_path / "tfds")
    for key, value in overrides.items():
        section, field = key.split(".")
        config[section][field] = value
    return config


def _losses(workdir) -> list[float]:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [row["loss"] for row in map(json.loads, f) if "loss" in row]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One uninterrupted runlocal training (100 steps) shared by the tests below."""
    tmp = tmp_path_factory.mktemp("uninterrupted")
    config = _config(tmp)
    report = train.train_and_evaluate(config, str(tmp / "run"))
    return tmp, config, report


def test_loss_falls_and_report_is_written(tiny_run):
    tmp, _, report = tiny_run
    losses = _losses(tmp / "run")
    assert len(losses) == 100  # logged every step
    # Single-batch losses are noisy: compare the first and last ten steps.
    assert np.mean(losses[-10:]) < 0.95 * np.mean(losses[:10]), losses
    # The reported model is the validation-chosen one, evaluated every 25 steps on held-out seen classes.
    selection = report["selection"]
    assert selection["metric"] == "val/map@all[exact]" and selection["step"] in (25, 50, 75, 100)
    assert report["step"] == selection["step"] and report["embedding_dim"] == 64
    validation = [row for row in map(json.loads, (tmp / "run" / "metrics.jsonl").read_text().splitlines())
                  if "val/map@all[exact]" in row]  # fmt: skip
    assert [row["step"] for row in validation] == [25, 50, 75, 100]
    best = max(validation, key=lambda row: row["val/map@all[exact]"])
    assert best["step"] == selection["step"] and best["val/map@all[exact]"] == pytest.approx(selection["value"])
    assert len(report["validation_classes"]) == 6 and report["semantics"] == "inductive"
    metrics = report["metrics"]
    assert metrics["map@all[exact]"] > metrics["map@all[chance]"]
    on_disk = json.loads((tmp / "run" / "report.json").read_text())
    assert on_disk["metrics"]["map@all[exact]"] == pytest.approx(report["metrics"]["map@all[exact]"])
    assert (tmp / "run" / "retrieval_grid.png").stat().st_size > 1000
    t = report["timings"]  # where the time went
    assert 0 < t["first_step_s"] < t["train_s"] and 0 < t["validation_s"] < t["train_s"] and t["checkpoint_s"] > 0
    assert t["until_final_eval_s"] >= t["setup_s"] + t["train_s"] and "untrained_eval_s" not in t  # runlocal: off
    assert json.loads((tmp / "run" / "config.json").read_text())["method"] == "bda"


def test_stopped_run_resumes_at_saved_step_and_matches(tiny_run, tmp_path):
    _, config, uninterrupted = tiny_run
    workdir = str(tmp_path / "run")
    assert train.train_and_evaluate(config, workdir, stop_after=30) == {"stopped_at": 30}
    assert checkpoint.Checkpointer(workdir, {}).latest_step() == 30
    assert checkpoint.Checkpointer(workdir, {}, subdir="best").latest_step() == 25  # the only validation so far
    resumed = train.train_and_evaluate(config, workdir)
    assert resumed["timings"]["train_steps_this_run"] == 70
    assert resumed["selection"] == uninterrupted["selection"]
    for key, value in uninterrupted["metrics"].items():
        assert resumed["metrics"][key] == pytest.approx(value, abs=1e-6), key


def test_nan_loss_stops_and_keeps_last_checkpoint(tiny_run, tmp_path):
    config = tiny_run[1].copy_and_resolve_references()  # the shared config stays finite
    workdir = str(tmp_path / "run")
    train.train_and_evaluate(config, workdir, stop_after=10)
    with config.unlocked():
        config.loss.w_cls = math.nan
    with pytest.raises(train.DivergenceError, match=r"diverged at step 11: loss is nan.*step 10"):
        train.train_and_evaluate(config, workdir)
    assert checkpoint.Checkpointer(workdir, {}).latest_step() == 10


def test_corrupt_checkpoint_is_named_and_left_in_place(tiny_run, tmp_path):
    _, config, _ = tiny_run
    workdir = tmp_path / "run"
    train.train_and_evaluate(config, str(workdir), stop_after=10)
    damaged = 0
    for root, _, files in os.walk(workdir / "checkpoints" / "10" / "model"):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "r+b") as f:
                f.truncate(max(0, os.path.getsize(path) // 3))
            damaged += 1
    assert damaged
    with pytest.raises(checkpoint.CheckpointError, match=r"checkpoints/10.*left in place"):
        train.train_and_evaluate(config, str(workdir))
    assert (workdir / "checkpoints" / "10").is_dir()


def test_missing_parent_and_unwritable_workdir(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"workdir parent .*nope.* does not exist"):
        train.prepare_workdir(str(tmp_path / "nope" / "run"))
    with pytest.raises(PermissionError, match=r"workdir '/sys/jsbir-run' is not writable"):
        train.prepare_workdir("/sys/jsbir-run")


def test_unknown_config_argument_is_named():
    with pytest.raises(ValueError, match=r"unknown config argument 'sise'.*size"):
        bda.get_config("sise=32")
    config = bda.get_config()
    with pytest.raises(AttributeError, match="nope"):
        config.train.nope = 1


def test_batch_size_must_split_over_devices(tmp_path):
    config = _config(tmp_path, **{"train.batch_size": 12})
    with pytest.raises(ValueError, match=r"config.train.batch_size=12 must be a multiple of .*8"):
        train.train_and_evaluate(config, str(tmp_path / "run"))


def test_unseen_classes_never_reach_training(tiny_run):
    from jsbir.data import get_dataset
    from jsbir.eval.protocols import get_protocol

    _, config, _ = tiny_run
    data = get_dataset(config.data)
    sketches, photos = data.training_pairs()
    assert not np.isin(sketches.label, data.info.unseen).any()
    assert not np.isin(photos.label, data.info.unseen).any()
    sets = get_protocol("zero_shot").sets(data)
    queries, gallery = sets.queries, sets.gallery
    assert set(np.unique(queries.label)) == set(data.info.unseen) == set(np.unique(gallery.label))


def _start_run(tmp_path, workdir, until_step: int) -> subprocess.Popen:
    """``python -m jsbir.main`` on runlocal in a subprocess, returned once it has logged ``until_step`` steps."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}
    command = [
        sys.executable, "-m", "jsbir.main", "--config", "configs/bda.py:runlocal",
        f"--config.data.data_dir={tmp_path / 'tfds'}", f"--workdir={workdir}",
    ]  # fmt: skip
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    process = subprocess.Popen(command, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    metrics = workdir / "metrics.jsonl"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= until_step:
            break
        time.sleep(0.2)
    assert process.poll() is None, process.stdout.read().decode()[-3000:]
    return process


def _logged_steps(workdir) -> list[int]:
    rows = map(json.loads, (workdir / "metrics.jsonl").read_text().splitlines())
    return [row["step"] for row in rows if "loss" in row]


def test_sigterm_checkpoints_the_last_finished_step_and_exits_143(tmp_path):
    workdir = tmp_path / "run"
    process = _start_run(tmp_path, workdir, until_step=13)
    process.send_signal(signal.SIGTERM)
    output = process.communicate(timeout=120)[0].decode()
    assert process.returncode == 143, output[-3000:]
    logged = _logged_steps(workdir)
    assert 13 <= logged[-1] < 100
    assert checkpoint.Checkpointer(str(workdir), {}).latest_step() == logged[-1]
    assert f"stopped by SIGTERM at step {logged[-1]}" in output


def test_sigkill_keeps_the_latest_and_the_best_checkpoint_and_resumes(tmp_path):
    workdir = tmp_path / "run"
    process = _start_run(tmp_path, workdir, until_step=36)  # past the step-25 validation and step-30 checkpoint
    process.kill()
    process.communicate(timeout=60)
    latest = checkpoint.Checkpointer(str(workdir), {}).latest_step()
    assert latest in (30, 40)  # 40 when the kill came after its save
    assert checkpoint.Checkpointer(str(workdir), {}, subdir="best").latest_step() == 25
    config = _config(tmp_path)
    report = train.train_and_evaluate(config, str(workdir))
    assert report["timings"]["train_steps_this_run"] == 100 - latest
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    validated = [row["step"] for row in rows if "val/map@all[exact]" in row]
    assert validated == [25, 50, 75, 100]  # the killed run's rows past its checkpoint were cut, none doubled
    assert _logged_steps(workdir) == list(range(1, 101))
    best = max((row for row in rows if "val/map@all[exact]" in row), key=lambda row: row["val/map@all[exact]"])
    assert report["selection"]["step"] == best["step"] == report["step"]
    assert checkpoint.Checkpointer(str(workdir), {}, subdir="best").latest_step() == best["step"]


def test_init_from_takes_parameters_only_and_the_start_is_chosen_once(tiny_run, tmp_path):
    from jsbir import sharding
    from jsbir.data import get_dataset, pipeline
    from jsbir.methods import get_method

    tmp, config, _ = tiny_run
    other = config.copy_and_resolve_references()
    with other.unlocked():
        other.init_from = str(tmp / "run")
        other.train.optimizer = "sgd"  # another optimiser state: only the parameters can come across
        other.train.freeze = "sketch_net/"
    data = get_dataset(other.data)
    method = get_method("bda")
    model = method.Model.from_config(other.model, data.info)
    sketches, _ = data.training_pairs()
    example = pipeline.example_batch("class_pairs", "rgb", sketches.image.shape[1:])
    factory = train.StateFactory(method, model, other, example, sharding.make_mesh())
    identity = train.checkpoint_identity(other, factory.abstract.params)
    fresh = checkpoint.Checkpointer(str(tmp_path / "new"), identity)
    assert factory.source(fresh) == "init_from"
    state = factory.build("init_from", fresh, identity)
    assert int(state.step) == 0
    saved, _ = checkpoint.Checkpointer(str(tmp / "run"), {}).restore_variables(
        factory.abstract.params, factory.abstract.model_state
    )
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(saved), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # A workdir's own checkpoint wins over init_from.
    assert factory.source(checkpoint.Checkpointer(str(tmp / "run"), identity)) == "checkpoint"
    with other.unlocked():
        other.init_from = str(tmp_path / "nothing")
    with pytest.raises(checkpoint.CheckpointError, match=r"init_from=.*nothing.* holds no"):
        train.StateFactory(method, model, other, example, sharding.make_mesh()).build("init_from", fresh, identity)


def test_validate_start_makes_the_starting_model_a_candidate(tiny_run):
    # Started from the trained tiny run with a learning rate that wrecks it (Adam moves every weight by about 0.1 a
    # step): step 2 validates worse than step 0, so the choice is the starting model, restored for the report.
    tmp, config, _ = tiny_run
    with config.unlocked():
        config.init_from = str(tmp / "run")
        config.train.steps, config.train.eval_every, config.train.warmup_steps = 2, 2, 0
        config.train.lr, config.train.validate_start = 0.1, True
    workdir = tmp / "from_start"

    report = train.train_and_evaluate(config, str(workdir))

    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    validated = {row["step"]: row["val/map@all[exact]"] for row in rows if "val/map@all[exact]" in row}
    assert sorted(validated) == [0, 2] and validated[2] < validated[0] - 0.02, validated
    assert report["selection"]["step"] == report["step"] == 0
    assert checkpoint.Checkpointer(str(workdir), {}, subdir="best").latest_step() == 0
