"""Run-side outputs and signals: the JSON-lines metric writer and the SIGINT/SIGTERM stop request."""

from __future__ import annotations

import json
import signal
import threading
from typing import Any

from absl import logging
from clu import metric_writers


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
