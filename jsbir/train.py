"""The trainer every method shares: mesh -> data -> init or restore -> jitted steps -> checkpoints -> evaluation.

``train_and_evaluate(config, workdir)`` never knows which method it trains: it asks ``jsbir.models.get_method``
for the method's ``Model``, ``loss_fn`` and ``embed``.
"""

from __future__ import annotations

import functools
import json
import math
import os
import signal
import threading
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax
from absl import logging
from clu import metric_writers, parameter_overview, periodic_actions
from tqdm import tqdm

from jsbir import checkpoint, evaluate, sharding
from jsbir.data import get_dataset, pipeline
from jsbir.models import get_method, pretrained
from jsbir.state import TrainState, frozen_mask, make_optimizer


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; the message names the step and the last good checkpoint."""


class JsonlWriter(metric_writers.MetricWriter):
    """Appends scalars as JSON lines to ``workdir/metrics.jsonl`` (one object per step)."""

    def __init__(self, path: str):
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def write_scalars(self, step: int, scalars: dict[str, Any]) -> None:
        row = {"step": int(step), **{k: float(v) for k, v in scalars.items()}}
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()  # a killed run keeps its log up to the last step written

    def write_summaries(self, step, values, metadata=None):
        pass

    def write_images(self, step, images):
        pass

    def write_videos(self, step, videos):
        pass

    def write_audios(self, step, audios, *, sample_rate):
        pass

    def write_texts(self, step, texts):
        pass

    def write_histograms(self, step, arrays, num_buckets=None):
        pass

    def write_hparams(self, hparams):
        pass

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class StopSignals:
    """Turns SIGINT and SIGTERM (Ctrl-C, a scheduler's preemption) into a request the training loop honours between
    steps, so the checkpoint it then writes is a finished step; a second signal interrupts at once.

    Handlers are installed only in the main thread (Python allows no other) and restored on exit.
    """

    def __init__(self):
        self.received: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        del frame
        if self.received is not None:
            raise KeyboardInterrupt(f"second {signal.Signals(signum).name}")
        self.received = signal.Signals(signum).name
        logging.warning("%s received: stopping after this step with a checkpoint", self.received)

    def __exit__(self, *exc_info: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def prepare_workdir(workdir: str, config: ml_collections.ConfigDict) -> str:
    """Checks that ``workdir`` can be used, creates it and writes the resolved config (process 0).

    Raises:
      FileNotFoundError: the parent folder does not exist.
      PermissionError: the folder cannot be written.
    """
    workdir = os.path.abspath(os.path.expanduser(workdir))
    parent = os.path.dirname(workdir)
    if not os.path.isdir(parent):
        raise FileNotFoundError(
            f"workdir parent {parent!r} does not exist; create it or choose another --workdir"
        )
    try:
        os.makedirs(workdir, exist_ok=True)
        probe = os.path.join(workdir, f".write_probe_{jax.process_index()}")
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as e:
        raise PermissionError(f"workdir {workdir!r} is not writable: {e.strerror}") from e
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "config.json"), "w") as f:
            f.write(config.to_json_best_effort(indent=2, sort_keys=True))
    return workdir


def make_train_step(method: Any, model: Any, loss_config: Any, total_steps: int, frozen: Any = None):
    """The jitted ``train_step(state, batch, rng) -> (state, measurements)``; the state is donated.

    ``frozen`` (a bool tree like the params, from ``state.frozen_mask``) stops the gradient of those parameters, so
    no backward pass is computed for them; their gradient is zero and the optimiser leaves them unchanged.
    """

    def stop_frozen(params: Any) -> Any:
        if frozen is None:
            return params
        return jax.tree.map(lambda p, f: jax.lax.stop_gradient(p) if f else p, params, frozen)

    def train_step(state: TrainState, batch: dict[str, jax.Array], rng: jax.Array):
        rng = jax.random.fold_in(rng, state.step)
        progress = state.step.astype(jnp.float32) / max(total_steps, 1)
        loss_fn = functools.partial(method.loss_fn, model, config=loss_config)
        grad_fn = jax.value_and_grad(
            lambda p: loss_fn(stop_frozen(p), state.model_state, batch, rng, progress), has_aux=True
        )
        (loss, (model_state, measurements)), grads = grad_fn(state.params)
        new_state = state.apply_gradients(grads, model_state)
        measurements = {
            **measurements,
            "loss": loss,
            "grad_norm": optax.tree.norm(grads),
            "param_norm": optax.tree.norm(new_state.params),
        }
        return new_state, measurements

    return jax.jit(train_step, donate_argnums=0)


def init_state(method: Any, model: Any, config: Any, info: Any, mesh: Any) -> TrainState:
    """Initialises the model on a dummy batch, replicated over the mesh, with pretrained backbones if configured."""
    size = info.image_size
    dummy = {
        "sketch": jnp.zeros((1, size, size, 3)),
        "photo": jnp.zeros((1, size, size, 3)),
        "label": jnp.zeros((1,), jnp.int32),
    }

    def init_variables(rng):
        return model.init({"params": rng, "sample": rng, "dropout": rng}, dummy, train=False)

    rng = jax.random.fold_in(jax.random.key(config.seed), 0)
    tx = make_optimizer(config.train, jax.eval_shape(init_variables, rng)["params"])

    def init(rng):
        variables = dict(init_variables(rng))
        params = variables.pop("params")
        return TrainState.create(params, variables, tx)

    abstract = jax.eval_shape(init, rng)
    shardings = jax.tree.map(lambda _: sharding.replicated(mesh), abstract)
    state = jax.jit(init, out_shardings=shardings)(rng)
    if config.model.get("pretrained"):
        # Pretrained backbone weights replace the random ones here; a workdir checkpoint or config.init_from,
        # restored by the caller, replace these in turn.
        variables = pretrained.apply_pretrained({"params": state.params, **state.model_state}, config.model)
        params = variables.pop("params")
        state = jax.device_put(TrainState.create(params, variables, tx), shardings)
    return state


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str, *, stop_after: int | None = None
) -> dict[str, Any]:
    """Trains ``config.method`` on ``config.data`` in ``workdir`` and evaluates it; resumes if possible.

    Args:
      config: the run's config (see ``configs/``).
      workdir: the run's folder; a checkpoint already there is resumed.
      stop_after: end this process after that many steps with a checkpoint and no evaluation (a time-boxed
        job or a test of resumption); the next start on the same workdir continues.

    Returns:
      The final report (see ``evaluate.Evaluator.run``), or ``{"stopped_at": step}`` when ``stop_after`` ended it,
      with ``"signal": "SIGTERM"`` (or SIGINT) added when a signal did; a checkpoint of that step is written first.
      On several hosts a scheduler signals every process, so all stop after the same step.
    """
    workdir = prepare_workdir(workdir, config)
    mesh = sharding.make_mesh()
    sharding.check_batch_size(config.train.batch_size, mesh)
    sharding.check_batch_size(config.eval.batch_size, mesh, "config.eval.batch_size")
    data = get_dataset(config.data)
    method = get_method(config.method)
    model = method.Model.from_config(config.model, data.info)
    state = init_state(method, model, config, data.info, mesh)

    identity = {
        "method": config.method,
        "backbone": config.model.backbone,
        "embed_dim": config.model.embed_dim,
        "num_classes": data.info.num_classes,
    }
    ckpt = checkpoint.Checkpointer(workdir, identity, keep=config.train.keep_checkpoints)
    # Restore order: workdir checkpoint > config.init_from > pretrained backbone (init_state) > scratch.
    if ckpt.latest_step() is not None:
        state = ckpt.restore(state)
        logging.info("Resumed from %s at step %d", ckpt.directory, int(state.step))
    elif config.init_from:
        source = checkpoint.Checkpointer(config.init_from, identity)
        state = source.restore_params(state)
        logging.info("Initialised parameters from %s", config.init_from)
    start = int(jax.device_get(state.step))
    total = config.train.steps

    is_main = jax.process_index() == 0
    writer = metric_writers.create_default_writer(workdir, just_logging=not is_main)
    if is_main:
        writer = metric_writers.MultiWriter(
            [writer, JsonlWriter(os.path.join(workdir, "metrics.jsonl"))]
        )
    if start == 0:
        logging.info("%s", parameter_overview.get_parameter_overview(state.params))

    evaluator = evaluate.Evaluator(method, model, data, config, mesh)
    untrained = None
    if start == 0 and config.eval.eval_untrained:
        untrained = evaluator.run(state, workdir, tag="untrained", write=False)

    frozen = frozen_mask(state.params, config.train.get("freeze", ""))
    if frozen is not None:
        sizes = [(p.size, f) for p, f in zip(jax.tree.leaves(state.params), jax.tree.leaves(frozen), strict=True)]
        logging.info(
            "config.train.freeze=%r freezes %d of %d parameters",
            config.train.freeze, sum(n for n, f in sizes if f), sum(n for n, _ in sizes),
        )  # fmt: skip
    train_step = make_train_step(method, model, config.loss, total, frozen)
    train_rng = jax.random.fold_in(jax.random.key(config.seed), 1)
    sketches, photos = data.training_pairs()
    batches = pipeline.train_batches(
        sketches,
        photos,
        global_batch=config.train.batch_size,
        seed=config.seed,
        start_step=start,
        augment=config.data.augment,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )
    hooks = [periodic_actions.ReportProgress(num_train_steps=total, writer=writer)]
    end = total if stop_after is None else min(total, start + stop_after)
    train_start = time.perf_counter()
    step = start
    with StopSignals() as stop, tqdm(total=total, initial=start, desc="train", disable=not is_main) as bar:
        for step in range(start + 1, end + 1):
            batch = sharding.to_global(next(batches), mesh)
            state, measurements = train_step(state, batch, train_rng)
            loss = float(measurements["loss"])
            if not math.isfinite(loss):
                raise NonFiniteLossError(
                    f"loss is {loss} at step {step}; stopped without saving. The last good checkpoint "
                    f"(step {ckpt.latest_step()}) stays in {ckpt.directory}. Lower config.train.lr "
                    "or check the inputs."
                )
            if step % config.train.log_every == 0 or step == end:
                writer.write_scalars(step, jax.device_get(measurements))
                bar.set_postfix(loss=f"{loss:.4f}")
            for hook in hooks:
                hook(step)
            bar.update(1)
            if step % config.train.checkpoint_every == 0:
                ckpt.save(state)
            if config.train.eval_every and step % config.train.eval_every == 0 and step < total:
                evaluator.run(state, workdir, tag=f"step{step}", writer=writer)
            if stop.received:
                break
    train_seconds = time.perf_counter() - train_start
    ckpt.save(state)
    if step < total:
        writer.flush()
        ckpt.close()
        stopped = {"stopped_at": step}
        if stop.received:
            stopped["signal"] = stop.received
        return stopped

    extra = {"timings": {"train_s": train_seconds, "train_steps_this_run": end - start}}
    if untrained is not None:
        extra["untrained"] = untrained["metrics"]
    report = evaluator.run(state, workdir, tag="final", writer=writer, extra=extra)
    writer.flush()
    ckpt.close()
    return report
