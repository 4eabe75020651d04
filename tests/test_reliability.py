"""Reliability: divergence with a finite loss, damaged checkpoints, refused starts, values checked up front, logs
and reports that a kill cannot corrupt. Each reproduction is shrunk to ``runlocal`` size."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from configs import bda
from jsbir import checkpoint, checks, train, writers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(tmp_path, **overrides):
    config = bda.get_config("runlocal")
    config.data.data_dir = str(tmp_path / "tfds")
    config.eval.eval_untrained = False
    for key, value in overrides.items():
        section, field = key.split(".")
        config[section][field] = value
    return config


@pytest.fixture(scope="module")
def stopped(tmp_path_factory):
    """A runlocal run stopped after 20 steps, checkpoints at 10 and 20."""
    tmp = tmp_path_factory.mktemp("stopped")
    config = _config(tmp)
    assert train.train_and_evaluate(config, str(tmp / "run"), stop_after=20) == {"stopped_at": 20}
    return tmp, config


def _copy(stopped, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(stopped[0] / "run", workdir)
    return str(workdir)


@pytest.mark.filterwarnings("ignore:Sharding info not provided")  # the raw read below restores on the saved topology
def test_infinite_gradient_with_a_finite_loss_stops_without_saving(stopped, tmp_path):
    workdir = _copy(stopped, tmp_path)
    config = _config(stopped[0], **{"train.lr": 1e5, "train.checkpoint_every": 1, "train.keep_checkpoints": 2})
    with pytest.raises(train.DivergenceError, match=r"training diverged at step \d+: .*(grad_norm|param_norm|loss)"):
        train.train_and_evaluate(config, workdir)
    steps = sorted(checkpoint.Checkpointer(workdir, {}).all_steps())
    assert steps and steps[-1] >= 20
    for step in steps:  # every checkpoint kept is finite, so rotation never dropped the last finite one
        saved = ocp.PyTreeCheckpointer().restore(os.path.join(workdir, "checkpoints", str(step), "model"))
        assert all(np.isfinite(np.asarray(leaf)).all() for leaf in jax.tree.leaves(saved)), step


def test_damaged_checkpoint_is_refused_and_an_intact_one_offered(stopped, tmp_path):
    workdir = _copy(stopped, tmp_path)
    data = max(
        (os.path.join(r, f) for r, _, fs in os.walk(os.path.join(workdir, "checkpoints", "20", "model")) for f in fs),
        key=os.path.getsize,
    )
    with open(data, "r+b") as f:  # flip 64 bytes in the middle of the largest data file
        f.seek(os.path.getsize(data) // 2)
        chunk = f.read(64)
        f.seek(-len(chunk), 1)
        f.write(bytes(b ^ 0xFF for b in chunk))
    config = _config(stopped[0])
    with pytest.raises(checkpoint.CheckpointError, match=r"checkpoints/20 is damaged.*resume_step=10"):
        train.train_and_evaluate(config, workdir)
    with config.unlocked():
        config.train.resume_step = 10
    assert train.train_and_evaluate(config, workdir, stop_after=5) == {"stopped_at": 15}
    assert os.path.isdir(os.path.join(workdir, "checkpoints.damaged", "20"))  # kept, out of the way


def test_refused_start_writes_nothing_and_each_start_keeps_its_config(stopped, tmp_path):
    workdir = _copy(stopped, tmp_path)
    first = open(os.path.join(workdir, "config.json")).read()
    other = _config(stopped[0], **{"model.embed_dim": 32})
    with pytest.raises(checkpoint.CheckpointError, match=r"another model.*embed_dim: checkpoint 64 vs run 32"):
        train.train_and_evaluate(other, workdir)
    assert open(os.path.join(workdir, "config.json")).read() == first
    assert sorted(f for f in os.listdir(workdir) if f.startswith("config")) == ["config.json"]
    train.train_and_evaluate(stopped[1], workdir, stop_after=1)
    assert sorted(f for f in os.listdir(workdir) if f.startswith("config")) == ["config.2.json", "config.json"]
    assert open(os.path.join(workdir, "config.json")).read() == first


def test_metrics_log_is_cut_back_to_the_restored_step(stopped, tmp_path):
    workdir = _copy(stopped, tmp_path)
    log = os.path.join(workdir, "metrics.jsonl")
    with open(log, "a") as f:  # what a run killed at step 23 had logged after its step-20 checkpoint
        f.write("".join(json.dumps({"step": s, "loss": 1.0}) + "\n" for s in (21, 22, 23)) + '{"step": 24, "lo')
    train.train_and_evaluate(stopped[1], workdir, stop_after=5)
    steps = [json.loads(line)["step"] for line in open(log) if "loss" in line]
    assert steps == sorted(steps) and len(steps) == len(set(steps)) and steps[-1] == 25


def test_total_steps_below_the_restored_step_is_refused(stopped, tmp_path):
    workdir = _copy(stopped, tmp_path)
    with pytest.raises(ValueError, match=r"config.train.steps=15 is below step 20 of the checkpoint"):
        train.train_and_evaluate(_config(stopped[0], **{"train.steps": 15}), workdir)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("eval.batch_size", 0, r"config.eval.batch_size=0: must be a positive integer"),
        ("train.batch_size", 0, r"config.train.batch_size=0: must be a positive integer"),
        ("train.batch_size", -8, r"config.train.batch_size=-8: must be a positive integer"),
        ("train.checkpoint_every", 0, r"config.train.checkpoint_every=0: must be a positive integer"),
        ("train.lr", float("nan"), r"config.train.lr=nan: must be a positive finite number"),
    ],
)
def test_values_are_checked_before_anything_is_written(tmp_path, key, value, message):
    config = _config(tmp_path, **{key: value})
    with pytest.raises(ValueError, match=message):
        checks.check_config(config)
    with pytest.raises(ValueError, match=message):
        train.train_and_evaluate(config, str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_config_arguments_name_their_key():
    with pytest.raises(ValueError, match=r"config argument 'steps' must be positive, got 0"):
        bda.get_config("steps=0")
    with pytest.raises(ValueError, match=r"config argument 'size' expects a number \(int\), got 'abc'"):
        bda.get_config("size=abc")


def test_command_line_config_errors_are_one_line():
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}
    for flag, expected in (
        ("--config.train.lrr=1", 'jsbir: config error: config.train.lrr: \'lrr\' Did you mean "lr" instead of "lrr"?'),
        ("--config.train.batch_size=0", "jsbir: config error: config.train.batch_size=0: must be a positive integer"),
    ):
        command = [sys.executable, "-m", "jsbir.main", "--config", "configs/bda.py:runlocal", flag, "--workdir=/none/x"]
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 2
        lines = [line for line in done.stderr.splitlines() if line.startswith("jsbir:")]
        assert lines == [expected], done.stderr[-2000:]
        assert "Traceback" not in done.stderr


def test_nan_before_the_first_checkpoint_says_so(tmp_path):
    config = _config(tmp_path)
    with config.unlocked():
        config.loss.w_cls = float("nan")
    with pytest.raises(train.DivergenceError, match=r"step 1: loss is nan.*No checkpoint had been written yet"):
        train.train_and_evaluate(config, str(tmp_path / "run"))


def test_full_disk_is_found_behind_wrapping_errors():
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device", "/runs/x/checkpoints/10")
        except OSError as inner:
            raise RuntimeError("async save failed") from inner
    except RuntimeError as outer:
        found = writers.no_space(outer)
    assert found is not None and found.filename == "/runs/x/checkpoints/10"
    assert writers.no_space(ValueError("something else")) is None


def test_atomic_write_leaves_the_old_file_when_interrupted(tmp_path, monkeypatch):
    path = tmp_path / "report.json"
    writers.write_atomic(str(path), "old")

    def fail(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(KeyboardInterrupt):
        writers.write_atomic(str(path), "new")
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["report.json"]


def _damage(folder: str) -> None:
    """Flips 64 bytes in the middle of the largest file under ``folder``."""
    data = max((os.path.join(r, f) for r, _, fs in os.walk(folder) for f in fs), key=os.path.getsize)
    with open(data, "r+b") as f:
        f.seek(os.path.getsize(data) // 2)
        chunk = f.read(64)
        f.seek(-len(chunk), 1)
        f.write(bytes(b ^ 0xFF for b in chunk))


def test_a_second_training_is_refused_until_the_holder_dies_and_stale_saves_are_removed(stopped, tmp_path):
    from test_runlock import held_by_another_process

    from jsbir import runlock

    workdir = _copy(stopped, tmp_path)
    stale = os.path.join(workdir, "checkpoints", "30.orbax-checkpoint-tmp-1733600000")
    os.makedirs(os.path.join(stale, "model"))  # what a save cut short by a second Ctrl-C left before the fix
    with held_by_another_process(runlock.lock_path(workdir)) as child:
        with pytest.raises(runlock.FolderLockedError, match=rf"{workdir} is in use by process {child.pid} on host"):
            train.train_and_evaluate(stopped[1], workdir, stop_after=1)
        assert sorted(f for f in os.listdir(workdir) if f.startswith("config")) == ["config.json"]  # nothing written
        child.kill()  # SIGKILL: the lock is taken over, not left behind
        child.wait()
        assert train.train_and_evaluate(stopped[1], workdir, stop_after=1) == {"stopped_at": 21}
    assert not os.path.exists(stale) and sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["20", "21"]


def test_training_refusals_are_one_line_with_their_exit_status(stopped, tmp_path):
    from jsbir import main

    workdir = _copy(stopped, tmp_path)
    _damage(os.path.join(workdir, "checkpoints", "20", "model"))
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}
    command = [sys.executable, "-m", "jsbir.main", "--config", "configs/bda.py:runlocal", f"--workdir={workdir}",
               f"--config.data.data_dir={stopped[0] / 'tfds'}", "--config.eval.eval_untrained=False"]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr[-3000:]
    lines = [line for line in done.stderr.splitlines() if line.startswith("jsbir:")]
    assert len(lines) == 1 and lines[0].startswith(f"jsbir: error: checkpoint {workdir}/checkpoints/20 is damaged")
    assert "--config.train.resume_step=10" in lines[0] and "Traceback" not in done.stderr
    assert main.refusal_status(train.DivergenceError("diverged")) == 1
    assert main.refusal_status(checkpoint.CheckpointError("damaged")) == 2
    assert main.refusal_status(KeyError("a bug")) is None  # keeps its traceback


def test_evaluate_chooses_a_step_and_names_the_option_that_works(stopped, tmp_path, capsys):
    from jsbir.retrieval import cli

    workdir = _copy(stopped, tmp_path)
    assert cli.main("evaluate", ["--workdir", workdir, "--checkpoint", "10"]) == 0
    report = json.load(open(os.path.join(workdir, "evaluation_test.json")))
    assert report["step"] == 10 and report["checkpoint"]["step"] == 10
    assert cli.main("evaluate", ["--workdir", workdir, "--checkpoint", "15"]) == 2
    assert "--checkpoint 15: no such checkpoint" in capsys.readouterr().err
    _damage(os.path.join(workdir, "checkpoints", "20", "model"))
    assert cli.main("evaluate", ["--workdir", workdir, "--checkpoint", "latest"]) == 2
    err = capsys.readouterr().err
    assert "checkpoints/20 is damaged" in err and "Checkpoint 10 is intact: pass --checkpoint 10 to use it." in err
    assert "resume_step" not in err
    # A damaged validation-chosen checkpoint (step 10's files, as the selector keeps them): the other is offered.
    shutil.copytree(os.path.join(workdir, "checkpoints", "10"), os.path.join(workdir, "best", "10"))
    _damage(os.path.join(workdir, "best", "10", "model"))
    assert cli.main("evaluate", ["--workdir", workdir, "--checkpoint", "best"]) == 2
    err = capsys.readouterr().err
    assert "best/10 is damaged" in err and "--checkpoint latest uses the newest training checkpoint instead" in err
