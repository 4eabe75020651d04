"""One writer per folder, signals held back while a checkpoint is written, and stale temporary checkpoint folders:
the parts that need no training (``test_reliability.py`` has the trainer's side)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from contextlib import contextmanager

import jax.numpy as jnp
import optax
import pytest

from jsbir import checkpoint, runlock, writers
from jsbir.state import TrainState

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOLD = "import sys, time; from jsbir import runlock; lock = runlock.FolderLock(sys.argv[1], sys.argv[2]).acquire(); "
HOLD += "print('held', flush=True); time.sleep(600)"


@contextmanager
def held_by_another_process(path: str, what: str = "training"):
    """A separate process holding the lock at ``path``; yields it (killed at the end if still alive)."""
    child = subprocess.Popen([sys.executable, "-c", HOLD, path, what], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "held"
        yield child
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()
        child.stdout.close()


def test_a_second_writer_is_refused_naming_the_holder_and_a_killed_holders_lock_is_taken_over(tmp_path):
    path = runlock.lock_path(str(tmp_path))
    with held_by_another_process(path) as child:
        with pytest.raises(runlock.FolderLockedError) as refused:
            runlock.FolderLock(path, "training").acquire()
        assert str(refused.value) == (
            f"{tmp_path} is in use by process {child.pid} on host {socket.gethostname()} (training); wait for it to "
            "finish or stop it, or choose another folder"
        )
        child.send_signal(signal.SIGKILL)  # no chance to clean up: the kernel drops its lock
        child.wait()
        lock = runlock.FolderLock(path, "evaluate").acquire()
    try:
        assert f'"pid": {os.getpid()}' in open(path).read()
    finally:
        lock.release()
    with runlock.locked(path, "training"):  # released: taken again in this process
        pass
    with pytest.raises(FileNotFoundError, match="does not exist"):
        runlock.FolderLock(runlock.lock_path(str(tmp_path / "none")), "evaluate").acquire()


def test_index_and_evaluate_commands_are_refused_while_another_process_writes(tmp_path, capsys):
    from jsbir.retrieval import cli

    (tmp_path / "photos").mkdir()
    out = tmp_path / "index"
    with held_by_another_process(runlock.sibling_lock_path(str(out)), "index") as child:
        assert cli.main("index", ["--photos", str(tmp_path / "photos"), "--out", str(out), "--add"]) == 2
        assert f"jsbir index: error: {out} is in use by process {child.pid}" in capsys.readouterr().err
    run = tmp_path / "run"
    run.mkdir()
    with held_by_another_process(runlock.lock_path(str(run))) as child:
        assert cli.main("evaluate", ["--workdir", str(run)]) == 2
        assert f"jsbir evaluate: error: {run} is in use by process {child.pid}" in capsys.readouterr().err
    assert cli.main("evaluate", ["--workdir", str(run)]) == 2  # free now: refused for what it is, an empty folder
    assert f"{run} holds no config.json: is it a run folder" in capsys.readouterr().err


def test_stale_temporary_checkpoint_folders_are_removed(tmp_path):
    for name in ("checkpoints/30.orbax-checkpoint-tmp-1733600000", "best/40.orbax-checkpoint-tmp", "checkpoints/20"):
        (tmp_path / name).mkdir(parents=True)
    removed = checkpoint.remove_stale_temporaries(str(tmp_path))
    assert sorted(os.path.relpath(p, tmp_path) for p in removed) == [
        "best/40.orbax-checkpoint-tmp", "checkpoints/30.orbax-checkpoint-tmp-1733600000",
    ]  # fmt: skip
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["20"] and os.listdir(tmp_path / "best") == []


def _state(value: float) -> TrainState:
    params = {"w": jnp.full((3,), value)}
    return TrainState.create(params, {}, optax.sgd(0.1)).replace(step=jnp.asarray(5, jnp.int32))


def test_a_second_ctrl_c_during_a_save_waits_for_the_whole_checkpoint(tmp_path, monkeypatch):
    ckpt = checkpoint.Checkpointer(str(tmp_path), {"method": "t"})
    save = ckpt._manager.save

    def interrupted_save(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)  # the second Ctrl-C arrives while Orbax writes
        return save(*args, **kwargs)

    monkeypatch.setattr(ckpt._manager, "save", interrupted_save)
    with writers.StopSignals() as stop:
        os.kill(os.getpid(), signal.SIGINT)  # the first asks for a stop after the step
        assert stop.received == "SIGINT"
        with pytest.raises(KeyboardInterrupt, match="second SIGINT"):
            ckpt.save(_state(1.5))
    assert os.listdir(tmp_path / "checkpoints") == ["5"]
    assert checkpoint.damaged_files(str(tmp_path / "checkpoints" / "5")) == []  # whole, integrity record included
    ckpt.close()
    restored = checkpoint.Checkpointer(str(tmp_path), {"method": "t"}).restore(_state(0.0))
    assert restored.params["w"].tolist() == [1.5, 1.5, 1.5]


def test_signals_are_delivered_after_the_block_in_order():
    seen = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(("handler", signum)))
    try:
        with writers.deferred_signals() as held:
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGTERM)
            seen.append(("inside", len(held)))
        assert seen == [("inside", 2), ("handler", signal.SIGTERM), ("handler", signal.SIGTERM)]
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_model_mismatch_compares_values_not_their_json_spelling():
    saved = {"gcn_features": [128], "embed_dim": 64, "head": {"sizes": [1, 2]}}
    wanted = {"gcn_features": (128,), "embed_dim": 32, "head": {"sizes": (1, 2)}}
    assert checkpoint._config_differences(saved, wanted) == ["config.model.embed_dim: checkpoint 64 vs run 32"]
    assert checkpoint._differences("parameters", {"a": [3, 4]}, {"a": (3, 4)}) == []


def test_a_stop_received_by_another_process_stops_this_one(monkeypatch):
    from jsbir import sharding, train

    stop = writers.StopSignals()
    assert not train._stop_requested(stop) and stop.received is None  # one process, no signal
    monkeypatch.setattr(sharding, "max_over_processes", lambda value: max(value, int(signal.SIGTERM)))
    assert train._stop_requested(stop) and stop.received == "SIGTERM"  # the other host's signal, by name
