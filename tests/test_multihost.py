"""Real multi-host training on one machine: two ``python -m jsbir.main --jax_distributed`` processes on localhost,
two CPU devices each, collectives through gloo, each process reading its own half of every batch.

They must train the model one process trains on four devices, write the run folder from process 0 alone, prepare
the shared data folder once between them, and both resume from the shared checkpoint when started again with more
steps. A SIGTERM that reaches one process stops both after the same step. A separate check has three processes
prepare one synthetic set at the same moment.

Slow by nature (five starts of both processes, each compiling its step): several minutes on an idle 2-core machine.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from configs import bda
from jsbir import sharding, train
from jsbir.data import get_dataset, pipeline
from jsbir.methods import get_method

ROOT = Path(__file__).resolve().parents[1]
STEPS, MORE_STEPS = 4, 6
TIMEOUT_S = 900  # one start of both processes, on a machine shared with other jobs

pytestmark = pytest.mark.skipif(
    not hasattr(jax.config, "jax_cpu_collectives_implementation")
    or not hasattr(jax._src.lib._jax, "make_gloo_tcp_collectives"),
    reason="this jaxlib has no gloo CPU collectives, so CPU processes cannot reduce across each other",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_two(tmp: Path, workdir: Path, steps: int, tag: str, signal_one: bool = False) -> list[str]:
    """Both processes of one start, run to the end; returns their logs (stdout and stderr together).

    ``signal_one``: once process 0 has logged a step, SIGTERM reaches process 1 alone (a preemption notice that
    reached one host); both must then stop with the signal's exit status."""
    port = _free_port()
    env = {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
    }  # and conftest's compilation cache, so the second start reuses the first one's programs
    processes = []
    for index in range(2):
        command = [
            sys.executable, "-m", "jsbir.main", "--config", "configs/bda.py:runlocal",
            f"--config.data.data_dir={tmp / 'tfds'}", f"--config.train.steps={steps}", f"--workdir={workdir}",
            "--jax_distributed", f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2",
            f"--process_id={index}",
        ]  # fmt: skip
        log = open(tmp / f"{tag}.{index}.log", "w")  # noqa: SIM115 - closed below
        processes.append((subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT), log))
    try:
        if signal_one:
            metrics, deadline = workdir / "metrics.jsonl", time.monotonic() + TIMEOUT_S
            while not (metrics.exists() and '"loss"' in metrics.read_text()) and time.monotonic() < deadline:
                time.sleep(0.02)
            processes[1][0].send_signal(signal.SIGTERM)
        for process, _ in processes:
            process.wait(timeout=TIMEOUT_S)
    finally:  # a failure or a timeout of one leaves the other waiting on its collectives: end both
        for process, log in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
            log.close()
    logs = [Path(log.name).read_text() for _, log in processes]
    for (process, _), text in zip(processes, logs, strict=True):
        assert process.returncode == (128 + signal.SIGTERM if signal_one else 0), text[-4000:]
    return logs


def _reference(tmp: Path, steps: int = STEPS) -> tuple[list[float], dict]:
    """The runlocal recipe trained ``steps`` steps in this process on a mesh of four of its eight devices."""
    config = bda.get_config(f"runlocal,steps={steps}")
    config.data.data_dir = str(tmp / "tfds")  # already prepared by the two processes
    data = get_dataset(config.data)
    method = get_method(config.method)
    model = method.Model.from_config(config.model, data.info)
    inputs = method.inputs(config)
    sketches, photos = data.training_pairs()
    example = pipeline.example_batch(inputs.sampler, inputs.preprocess, sketches.image.shape[1:])
    mesh = sharding.make_mesh(jax.devices()[:4])
    factory = train.StateFactory(method, model, config, example, mesh)
    state = factory.build("scratch", None, {})
    step = train.make_train_step(method, model, config.loss, config.train.steps)
    batches = train.training_batches(config, inputs, sketches, photos)
    rng = train.training_rng(config)
    losses = []
    for _ in range(steps):
        state, measurements = step(state, sharding.to_global(next(batches), mesh), rng)
        losses.append(float(measurements["loss"]))
    return losses, {"params": jax.device_get(state.params), "abstract": factory.abstract_with_shardings()}


def _rows(workdir: Path) -> list[dict]:
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A first start of both processes (``STEPS`` steps, on a data folder nobody has prepared), the one-process
    reference, then a second start with ``MORE_STEPS`` on the same workdir."""
    tmp = tmp_path_factory.mktemp("multihost")
    workdir = tmp / "run"
    first = _start_two(tmp, workdir, STEPS, "first")
    files = sorted(p.name for p in workdir.iterdir())
    report = json.loads((workdir / "report.json").read_text())
    rows = _rows(workdir)
    from jsbir import checkpoint

    saved = checkpoint.Checkpointer(str(workdir), {}).latest_step()
    losses, reference = _reference(tmp)
    params, _ = checkpoint.Checkpointer(str(workdir), {}).restore_variables(
        reference["abstract"].params, reference["abstract"].model_state
    )
    second = _start_two(tmp, workdir, MORE_STEPS, "second")
    return {
        "tmp": tmp, "workdir": workdir, "first": first, "second": second, "files_after_first": files,
        "report_after_first": report, "rows_after_first": rows, "saved": saved, "reference_losses": losses,
        "reference": reference["params"], "params": jax.device_get(params),
    }  # fmt: skip


def test_two_processes_train_the_model_of_one_process_with_four_devices(runs):
    logged = [row for row in runs["rows_after_first"] if "loss" in row]
    assert [row["step"] for row in logged] == list(range(1, STEPS + 1))
    np.testing.assert_allclose([row["loss"] for row in logged], runs["reference_losses"], rtol=1e-5)
    assert len(set(np.round(runs["reference_losses"], 3))) == STEPS  # the loss moves: a real curve is compared
    flat = jax.tree_util.tree_flatten_with_path(runs["reference"])[0]
    for (path, expected), got in zip(flat, jax.tree.leaves(runs["params"]), strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6, err_msg=jax.tree_util.keystr(path))
    for text in runs["first"]:
        assert "on 4 devices" in text and "Started from scratch at step 0" in text


def test_only_process_zero_writes_the_run_folder(runs):
    files = runs["files_after_first"]
    assert len([f for f in files if f.startswith("events.out.tfevents")]) == 1, files  # one TensorBoard writer
    assert {"config.json", "metrics.jsonl", "report.json", "retrieval_grid.png", "checkpoints", "best"} <= set(files)
    assert not any(f.startswith(("config.2", ".write_probe")) for f in files), files
    steps = [row["step"] for row in runs["rows_after_first"] if "loss" in row]
    assert len(steps) == len(set(steps))  # one JSON-lines writer
    assert runs["report_after_first"]["timings"]["train_steps_this_run"] == STEPS
    first, other = runs["first"]
    assert "zero_shot protocol, step" in first and "zero_shot protocol, step" not in other  # the report's table


def test_both_processes_resume_from_the_shared_checkpoint(runs):
    assert runs["saved"] == STEPS
    for text in runs["second"]:
        assert f"Started from {runs['workdir'] / 'checkpoints'} at step {STEPS}" in text, text[-3000:]
    rows = _rows(runs["workdir"])
    assert [row["step"] for row in rows if "loss" in row] == list(range(1, MORE_STEPS + 1))
    # The first start's steps were kept as they were, not logged again.
    before = [row for row in runs["rows_after_first"] if "loss" in row]
    assert [row for row in rows if "loss" in row][:STEPS] == before
    report = json.loads((runs["workdir"] / "report.json").read_text())
    assert report["timings"]["train_steps_this_run"] == MORE_STEPS - STEPS and report["started_from"] == "checkpoint"
    assert (runs["workdir"] / "config.2.json").exists() and not (runs["workdir"] / "config.3.json").exists()


def test_a_signal_reaching_one_process_stops_both_after_the_same_step(runs):
    """SIGTERM to process 1 alone: both stop after the same step with one checkpoint, and the next start resumes
    to the losses of the run nobody interrupted."""
    # As many steps as the other resumed start: the one-process reference reduces over its devices in another order
    # than two processes do, and over more steps float32 differences compound (2e-5 relative by step 7).
    tmp, total = runs["tmp"], MORE_STEPS
    workdir = tmp / "signalled"
    logs = _start_two(tmp, workdir, total, "signalled", signal_one=True)
    stopped = [re.findall(r"stopped by SIGTERM at step (\d+);", text) for text in logs]
    assert len(stopped[0]) == len(stopped[1]) == 1 and stopped[0] == stopped[1], [t[-2000:] for t in logs]
    step = int(stopped[0][0])
    assert 1 <= step < total
    from jsbir import checkpoint

    assert checkpoint.Checkpointer(str(workdir), {}).latest_step() == step
    _start_two(tmp, workdir, total, "resumed")
    losses, _ = _reference(tmp, total)
    logged = [row for row in _rows(workdir) if "loss" in row]
    assert [row["step"] for row in logged] == list(range(1, total + 1))
    np.testing.assert_allclose([row["loss"] for row in logged], losses, rtol=1e-5)


def _prepare(data_dir: str, barrier, counts: str) -> tuple[int, float]:
    """One process's ``get_dataset``-style prepare of a tiny synthetic set, started with the others at once;
    every rendering pass it does is counted in the file ``counts``."""
    from jsbir.data import synthetic
    from jsbir.data.builders import synthetic_sbir
    from jsbir.data.records import load_split

    generate = synthetic.generate

    def counted(split, *args, **kwargs):
        with open(counts, "a") as f:
            f.write(f"{os.getpid()} {split}\n")
        return generate(split, *args, **kwargs)

    synthetic.generate = counted
    barrier.wait()
    config = synthetic_sbir.make_config(size=32, train_per_class=3, test_per_class=2, seed=5)
    train_split = load_split(synthetic_sbir.prepare(data_dir, config), "train")
    return len(train_split["label"]), float(np.asarray(train_split["image"], np.float64).sum())


def test_processes_preparing_one_data_folder_take_turns(tmp_path):
    context = multiprocessing.get_context("spawn")
    barrier = context.Manager().Barrier(3)
    counts = tmp_path / "generated.txt"
    with context.Pool(3) as pool:
        results = pool.starmap(_prepare, [(str(tmp_path / "tfds"), barrier, str(counts))] * 3)
    assert len(set(results)) == 1 and results[0][0] == 40 * 3 * 2, results  # the same records for everyone
    passes = counts.read_text().split()
    assert len(set(passes[::2])) == 1 and sorted(passes[1::2]) == ["test", "train"], passes  # one process rendered
    assert not list(tmp_path.glob(".*.lock")) and not list((tmp_path / "tfds").rglob("incomplete.*"))
