"""Run-side outputs and signals: atomic file writes, the config of each start, the JSON-lines metric writer, the
SIGINT/SIGTERM stop request, signals held back while a checkpoint is written, and the disk-full diagnosis."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import tempfile
import threading
from collections.abc import Iterator
from typing import Any

from absl import logging
from clu import metric_writers


def write_atomic(path: str, text: str) -> None:
    """Writes ``text`` to ``path`` through a temporary file in the same folder and a rename, so a reader (or a
    crash) never sees half a file."""
    folder = os.path.dirname(os.path.abspath(path))
    handle, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", dir=folder)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_config(workdir: str, config: Any) -> str:
    """Writes the resolved config of this start: ``config.json`` for the first start of a workdir, then
    ``config.2.json``, ``config.3.json``... so each start's settings are kept. Returns the path written."""
    path, start = os.path.join(workdir, "config.json"), 1
    while os.path.exists(path):
        start += 1
        path = os.path.join(workdir, f"config.{start}.json")
    write_atomic(path, config.to_json_best_effort(indent=2, sort_keys=True))
    return path


def no_space(error: BaseException) -> OSError | None:
    """The "no space left on device" error behind ``error`` (itself, or anywhere in its cause chain), or None."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno == errno.ENOSPC:
            return error
        if "No space left on device" in str(error):
            return OSError(errno.ENOSPC, "No space left on device", getattr(error, "filename", None))
        error = error.__cause__ or error.__context__
    return None


def _step_of(line: str) -> int | None:
    """The step of a metrics line, or None for a line a killed run left half-written."""
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return None


class JsonlWriter(metric_writers.MetricWriter):
    """Appends scalars as JSON lines to ``workdir/metrics.jsonl`` (one object per step).

    Args:
      path: the file.
      resume_step: the step a resumed run restarts after; rows of later steps (logged by the interrupted run
        after its last checkpoint, and about to be logged again) are dropped first.
    """

    def __init__(self, path: str, resume_step: int = 0):
        if resume_step and os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                rows = [line for line in f if _step_of(line) is not None and _step_of(line) <= resume_step]
            write_atomic(path, "".join(rows))
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


@contextlib.contextmanager
def deferred_signals() -> Iterator[list[int]]:
    """Holds SIGINT and SIGTERM back for the block (a checkpoint save), then delivers them, in order, to the
    handlers that were installed before: a Ctrl-C, even a second one, never cuts a save in half (which left a
    ``<step>.orbax-checkpoint-tmp`` folder and "cannot schedule new futures after shutdown"). Outside the main
    thread (where Python allows no handler) the block runs as it is.

    Yields:
      The list of signal numbers received so far in the block.
    """
    if threading.current_thread() is not threading.main_thread():
        yield []
        return
    held: list[int] = []

    def hold(signum: int, frame: Any) -> None:
        del frame
        held.append(signum)
        logging.warning("%s received while a checkpoint is written: honoured once it is whole",
                        signal.Signals(signum).name)  # fmt: skip

    previous = {sig: signal.signal(sig, hold) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield held
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for signum in held:
            handler = previous[signum]
            if callable(handler):
                handler(signum, None)
            elif handler == signal.SIG_DFL:
                signal.raise_signal(signum)  # the default action: SIGINT's KeyboardInterrupt, SIGTERM's exit
