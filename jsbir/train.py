"""The trainer every method shares: mesh -> data -> restore or init (one choice) -> jitted steps -> checkpoints ->
evaluation.

``train_and_evaluate(config, workdir)`` never knows which method it trains: it reads the method's declaration
(``jsbir.methods.get_method``): its ``Model``, ``loss_fn``, RNG streams and declared input, from which the data
stream and the example batch that initialises the model follow.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import signal
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax
from absl import logging
from clu import metric_writers, parameter_overview, periodic_actions
from tqdm import tqdm

from jsbir import checkpoint, checks, runlock, sharding
from jsbir.data import edges, features, get_dataset, pipeline, samplers
from jsbir.eval.evaluator import Evaluator
from jsbir.methods import get_method
from jsbir.methods.api import Method
from jsbir.selection import Selector
from jsbir.state import TrainState, frozen_mask, make_optimizer
from jsbir.weights import pretrained
from jsbir.writers import JsonlWriter, StopSignals, write_config


class DivergenceError(FloatingPointError):
    """Training diverged: the loss, the gradient norm or the parameter norm is NaN or infinite. The message names
    the step, the values and the last good checkpoint; nothing non-finite is ever saved."""


def prepare_workdir(workdir: str) -> str:
    """Checks that ``workdir`` can be used and creates it; nothing is written in it yet.

    Raises:
      FileNotFoundError: the parent folder does not exist.
      PermissionError: the folder cannot be written.
    """
    workdir = os.path.abspath(os.path.expanduser(workdir))
    parent = os.path.dirname(workdir)
    if not os.path.isdir(parent):
        raise FileNotFoundError(f"workdir parent {parent!r} does not exist; create it or choose another --workdir")
    try:
        os.makedirs(workdir, exist_ok=True)
        probe = os.path.join(workdir, f".write_probe_{jax.process_index()}")
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as e:
        raise PermissionError(f"workdir {workdir!r} is not writable: {e.strerror}") from e
    return workdir


def make_train_step(method: Method, model: Any, loss_config: Any, total_steps: int, frozen: Any = None):
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


class StateFactory:
    """Builds a run's first :class:`TrainState` from exactly one source, chosen once.

    Restore order (the first that exists wins): the workdir's own checkpoint (a resumed run; restored straight
    into the abstract state, nothing is initialised) > ``config.init_from`` (another run's parameters, with a fresh
    optimiser) > the pretrained backbone weights (``config.model.pretrained``, written into a fresh initialisation)
    > a fresh initialisation.

    Args:
      method: the method's declaration.
      model: its Model.
      config: the run config.
      example: the example batch that initialises the model.
      mesh: the device mesh; the state is replicated over it.
    """

    def __init__(self, method: Method, model: Any, config: Any, example: dict[str, Any], mesh: Any):
        self.config = config
        self.rng = jax.random.fold_in(jax.random.key(config.seed), 0)

        def init_variables(rng):
            return model.init(method.init_rngs(rng), example, train=False)

        self.init_variables = init_variables
        variables = jax.eval_shape(init_variables, self.rng)
        self.tx = make_optimizer(config.train, variables["params"], method.freeze_pattern(config))
        self.abstract = jax.eval_shape(self._create, variables)
        self.shardings = jax.tree.map(lambda _: sharding.replicated(mesh), self.abstract)

    def _create(self, variables: dict[str, Any]) -> TrainState:
        variables = dict(variables)
        params = variables.pop("params")
        return TrainState.create(params, variables, self.tx)

    def abstract_with_shardings(self) -> TrainState:
        """The state's shapes, dtypes and shardings, with no arrays behind them."""
        return jax.tree.map(
            lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), self.abstract, self.shardings
        )

    def source(self, ckpt: checkpoint.Checkpointer) -> str:
        """Which source the restore order picks: "checkpoint", "init_from", "pretrained" or "scratch"."""
        if ckpt.latest_step() is not None:
            return "checkpoint"
        if self.config.init_from:
            return "init_from"
        return "pretrained" if self.config.model.get("pretrained") else "scratch"

    def build(self, source: str, ckpt: checkpoint.Checkpointer, identity: dict[str, Any]) -> TrainState:
        """The state from ``source`` (see :meth:`source`)."""
        abstract = self.abstract_with_shardings()
        if source == "checkpoint":
            step = self.config.train.get("resume_step", 0) or None
            if step is not None and step not in ckpt.all_steps():
                raise checkpoint.CheckpointError(
                    f"config.train.resume_step={step}: no such checkpoint in {ckpt.directory} "
                    f"(there are {sorted(ckpt.all_steps())})"
                )
            state = ckpt.restore(abstract, step)
            if step is not None:
                moved = ckpt.set_aside_after(step)
                logging.warning("Resumed from checkpoint %d; moved newer checkpoints %s aside", step, moved)
            return state
        if source == "init_from":
            folder = os.path.join(self.config.init_from, checkpoint.CHECKPOINT_SUBDIR)
            if not os.path.isdir(folder):
                raise checkpoint.CheckpointError(f"config.init_from={self.config.init_from!r} holds no {folder}")
            origin = checkpoint.Checkpointer(self.config.init_from, identity, self.config.model.to_dict())
            try:
                params, model_state = origin.restore_variables(abstract.params, abstract.model_state)
            finally:
                origin.close()
            variables = {"params": params, **model_state}
        elif source == "pretrained":
            variables = pretrained.apply_pretrained(jax.jit(self.init_variables)(self.rng), self.config.model)
        else:
            scratch = jax.jit(lambda rng: self._create(self.init_variables(rng)), out_shardings=self.shardings)
            return scratch(self.rng)
        return jax.jit(self._create, out_shardings=self.shardings)(variables)


def training_batches(config: Any, inputs: Any, sketches: Any, photos: Any, start_step: int = 0) -> Any:
    """The trainer's stream of this process's host-local batches, from ``start_step`` on (an exact resume).

    Args:
      config: the run config (``train.batch_size``, ``seed``, ``data.augment``).
      inputs: the method's input declaration (``Method.inputs(config)``: sampler and preprocessing).
      sketches, photos: the training examples (``SbirData.training_pairs()``).
      start_step: the first step the stream serves.
    """
    return pipeline.train_batches(
        sketches,
        photos,
        sampler=inputs.sampler,
        preprocessing=inputs.preprocess,
        global_batch=config.train.batch_size,
        seed=config.seed,
        start_step=start_step,
        augment=config.data.augment,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )


def training_rng(config: Any) -> jax.Array:
    """The key every training step folds its step number into."""
    return jax.random.fold_in(jax.random.key(config.seed), 1)


def checkpoint_identity(config: Any, params: Any) -> dict[str, Any]:
    """What a checkpoint must match: the method and the exact parameter tree (names and shapes)."""
    return {"method": config.method, "parameters": checkpoint.parameter_structure(params)}


def _log_freezing(state: TrainState, frozen: Any, pattern: str) -> None:
    sizes = [(p.size, f) for p, f in zip(jax.tree.leaves(state.params), jax.tree.leaves(frozen), strict=True)]
    logging.info(
        "freezing %r: %d of %d parameters",
        pattern, sum(n for n, f in sizes if f), sum(n for n, _ in sizes),
    )  # fmt: skip


def _stop_requested(stop: StopSignals) -> bool:
    """Whether any process received a stop signal (checked every step on every process): all stop together, and
    the processes that received none take the signal's name from the one that did."""
    signum = sharding.max_over_processes(signal.Signals[stop.received].value if stop.received else 0)
    if signum and stop.received is None:
        stop.received = signal.Signals(signum).name
    return bool(signum)


@contextlib.contextmanager
def _timed(timings: dict[str, float], key: str):
    """Adds the wall time of the block to ``timings[key]``."""
    begin = time.perf_counter()
    try:
        yield
    finally:
        timings[key] = timings.get(key, 0.0) + time.perf_counter() - begin


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str, *, stop_after: int | None = None
) -> dict[str, Any]:
    """:func:`run_training` holding the workdir's lock (process 0; ``jsbir.runlock``): a second writer is refused, and
    temporary checkpoint folders an interrupted save left are removed first. Arguments and result as there.

    Raises:
      jsbir.runlock.FolderLockedError: another process trains (or evaluates) in ``workdir``.
    """
    checks.check_config(config)
    workdir = prepare_workdir(workdir)
    lock, refused = None, None
    if jax.process_index() == 0:  # one lock per run, however many hosts: process 0 writes the folder
        try:
            lock = runlock.FolderLock(runlock.lock_path(workdir), "training").acquire()
        except runlock.FolderLockedError as e:
            refused = e
    if sharding.max_over_processes(int(refused is not None)):  # the other hosts learn it, rather than wait for it
        raise refused or runlock.FolderLockedError(f"{workdir} is in use: process 0 could not take its lock")
    try:
        if lock is not None:
            checkpoint.remove_stale_temporaries(workdir)
        return run_training(config, workdir, stop_after=stop_after)
    finally:
        if lock is not None:
            lock.release()


def run_training(config: ml_collections.ConfigDict, workdir: str, *, stop_after: int | None = None) -> dict[str, Any]:
    """Trains ``config.method`` on ``config.data`` in ``workdir`` and evaluates it; resumes if possible.

    Args:
      config: the run's config (see ``configs/``).
      workdir: the run's folder; a checkpoint already there is resumed.
      stop_after: end this process after that many steps with a checkpoint and no evaluation (a time-boxed
        job or a test of resumption); the next start on the same workdir continues.

    Returns:
      The final report (see ``Evaluator.run``), or ``{"stopped_at": step}`` when ``stop_after`` ended it,
      with ``"signal": "SIGTERM"`` (or SIGINT) added when a signal did; a checkpoint of that step is written first.
      On several hosts a scheduler signals every process, so all stop after the same step.
    """
    run_start = time.perf_counter()
    # Where the time goes: setup (data, model, state; features_s of it for a method that trains on features, edges_s
    # for photos turned into edge maps), evaluation of the untrained model, the first step (its compilation),
    # validation and checkpoints inside the loop, and the loop itself (train_s, which includes them).
    timings: dict[str, float] = {}
    checks.check_config(config)
    workdir = prepare_workdir(workdir)
    mesh = sharding.make_mesh()
    sharding.check_batch_size(config.train.batch_size, mesh)
    sharding.check_batch_size(config.eval.batch_size, mesh, "config.eval.batch_size")
    data = get_dataset(config.data)
    if config.data.get("photo_edges", "none") != "none":
        with _timed(timings, "edges_s"):
            data = edges.with_edge_maps(data, config, mesh)
    method = get_method(config.method)
    inputs = method.inputs(config)
    feature_summary = None
    if samplers.get_sampler(inputs.sampler).stored == "features" and data.train_sketches.image.ndim == 4:
        with _timed(timings, "features_s"):
            data, feature_summary = features.with_features(data, config, mesh)
    model = method.Model.from_config(config.model, data.info)
    sketches, photos = data.training_pairs()
    example = pipeline.example_batch(inputs.sampler, inputs.preprocess, sketches.image.shape[1:])

    factory = StateFactory(method, model, config, example, mesh)
    identity = checkpoint_identity(config, factory.abstract.params)
    model_config = config.model.to_dict()
    ckpt = checkpoint.Checkpointer(workdir, identity, model_config, keep=config.train.keep_checkpoints)
    source = factory.source(ckpt)
    state = factory.build(source, ckpt, identity)
    start = int(jax.device_get(state.step))
    checks.check_resume(config, start)
    logging.info("Started from %s at step %d", {"checkpoint": ckpt.directory}.get(source, source), start)
    total = config.train.steps

    is_main = jax.process_index() == 0
    # Everything is validated: only now does this start write into the workdir.
    if is_main:
        write_config(workdir, config)
    writer = metric_writers.create_default_writer(workdir, just_logging=not is_main)
    if is_main:
        jsonl = JsonlWriter(os.path.join(workdir, "metrics.jsonl"), resume_step=start)
        writer = metric_writers.MultiWriter([writer, jsonl])
    if start == 0:
        logging.info("%s", parameter_overview.get_parameter_overview(state.params))

    evaluator = Evaluator(method, model, data, config, mesh)
    selector = None
    if data.val_sketches is not None:
        validation = Evaluator(method, model, data, config, mesh, split="validation")
        metric = config.train.select_metric or validation.protocol.select_metric
        selector = Selector(validation, workdir, identity, model_config, metric)
    timings["setup_s"] = time.perf_counter() - run_start
    if start == 0 and selector is not None and config.train.validate_start:
        with _timed(timings, "validation_s"):
            selector(state, workdir, writer)  # the starting point is a candidate: training must beat it
    untrained = None
    if start == 0 and config.eval.eval_untrained:
        with _timed(timings, "untrained_eval_s"):
            untrained = evaluator.run(state, workdir, tag="untrained", write=False)

    frozen = frozen_mask(state.params, method.freeze_pattern(config))
    if frozen is not None:
        _log_freezing(state, frozen, method.freeze_pattern(config))
    train_step = make_train_step(method, model, config.loss, total, frozen)
    train_rng = training_rng(config)
    batches = training_batches(config, inputs, sketches, photos, start)
    hooks = [periodic_actions.ReportProgress(num_train_steps=total, writer=writer)]
    end = total if stop_after is None else min(total, start + stop_after)
    train_start = time.perf_counter()
    step = start
    with StopSignals() as stop, tqdm(total=total, initial=start, desc="train", disable=not is_main) as bar:

        def check(step: int, measurements: dict[str, jax.Array]) -> None:
            """Stops on divergence and logs; called one step late so the device never waits for it."""
            host = jax.device_get(measurements)
            loss = float(host["loss"])
            watched = {k: float(host[k]) for k in ("loss", "grad_norm", "param_norm")}
            bad = {k: v for k, v in watched.items() if not math.isfinite(v)}
            if bad:
                last = ckpt.latest_step()
                kept = (
                    f"The last good checkpoint (step {last}) stays in {ckpt.directory}"
                    if last is not None
                    else "No checkpoint had been written yet"
                )
                raise DivergenceError(
                    f"training diverged at step {step}: "
                    + ", ".join(f"{k} is {v}" for k, v in bad.items())
                    + f" (loss {loss:.4g}); stopped without saving. {kept}. Lower config.train.lr or check the inputs."
                )
            if step % config.train.log_every == 0 or step == end:
                writer.write_scalars(step, host)
                bar.set_postfix(loss=f"{loss:.4f}")

        pending = None  # the last step's measurements, not yet read back
        for step in range(start + 1, end + 1):
            batch = sharding.to_global(next(batches), mesh)
            first = step == start + 1  # its time is mostly compilation
            with _timed(timings, "first_step_s") if first else contextlib.nullcontext():
                state, measurements = train_step(state, batch, train_rng)
            if pending is not None:
                check(*pending)
            pending = (step, measurements)
            for hook in hooks:
                hook(step)
            bar.update(1)
            validate = selector is not None and (
                step == total or (config.train.eval_every and step % config.train.eval_every == 0)
            )
            if step % config.train.checkpoint_every == 0 or validate:
                check(*pending)  # never save or select a state whose loss was not finite
                pending = None
            if step % config.train.checkpoint_every == 0:
                with _timed(timings, "checkpoint_s"):
                    ckpt.save(state)
            if validate:
                with _timed(timings, "validation_s"):
                    selector(state, workdir, writer)
            if _stop_requested(stop):
                break
        if pending is not None:
            check(*pending)
    train_seconds = time.perf_counter() - train_start
    ckpt.save(state)
    if step < total:
        writer.flush()
        ckpt.close()
        if selector is not None:
            selector.close()
        stopped = {"stopped_at": step}
        if stop.received:
            stopped["signal"] = stop.received
        return stopped

    timings.update(train_s=train_seconds, train_steps_this_run=end - start)
    extra = {"timings": timings, "started_from": source}
    if feature_summary is not None:
        extra["features"] = feature_summary
    if untrained is not None:
        extra["untrained"] = untrained["metrics"]
    if selector is not None:
        state, extra["selection"] = selector.chosen(state, factory.abstract_with_shardings())
        selector.close()
    else:
        extra["selection"] = {"metric": None, "step": total, "note": "no validation split: the last step"}
    timings["until_final_eval_s"] = time.perf_counter() - run_start  # the final evaluation adds embed_s, metrics_s
    weight = extra["selection"].get("fusion_weight")
    report = evaluator.run(state, workdir, tag="final", writer=writer, extra=extra, fusion_weight=weight)
    writer.flush()
    ckpt.close()
    return report
