"""Model selection on validation: evaluate the held-out seen-class (or instance) validation split during training
and keep the best checkpoint by a named metric beside the latest ones.

The best checkpoint lives in ``workdir/best`` (one kept); its JSON description records the metric and its value,
so a resumed run keeps choosing against the same best. The final report evaluates that checkpoint on the test
classes and says which step it was, with the frozen baseline's fusion weight chosen with it
(``jsbir.eval.frozen``). Nothing here reads the test split.
"""

from __future__ import annotations

import math
from typing import Any

from absl import logging

from jsbir import checkpoint
from jsbir.eval.evaluator import Evaluator

BEST_SUBDIR = "best"


class Selector:
    """Validation evaluations and the best checkpoint of one run.

    Args:
      evaluator: an ``Evaluator`` on the validation split.
      workdir: the run's folder.
      identity: the checkpoint identity (as for the latest checkpoints).
      model_config: the model config, recorded with each save.
      metric: the validation metric to maximise (a key of the protocol's metrics, e.g. "map@all[exact]").
    """

    def __init__(self, evaluator: Evaluator, workdir: str, identity: dict, model_config: dict, metric: str):
        self.evaluator, self.metric = evaluator, metric
        self.best = checkpoint.Checkpointer(workdir, identity, model_config, keep=1, subdir=BEST_SUBDIR)
        self.value, self.fusion_weight = -math.inf, 0.0
        step = self.best.latest_step()
        if step is not None:
            meta = self.best.meta(step)
            if meta.get("metric") == f"val/{metric}":
                self.value = float(meta["value"])
                self.fusion_weight = float(meta.get("fusion_weight", 0.0))
            else:  # a resumed run that selects by another metric starts its choice afresh
                logging.warning("best checkpoint %d was chosen by %s, not val/%s: choosing afresh", step,
                                meta.get("metric"), metric)  # fmt: skip

    def __call__(self, state: Any, workdir: str, writer: Any) -> dict[str, float]:
        """Evaluates ``state`` on validation, logs ``val/...`` scalars, and saves it when it is the best so far.

        Raises:
          KeyError: the metric is not among the validation metrics (the message lists them).
        """
        report = self.evaluator.run(state, workdir, tag="validation", write=False)
        values = report["metrics"]
        if self.metric not in values:
            raise KeyError(f"config.train.select_metric={self.metric!r} is not a validation metric: {sorted(values)}")
        weight = report.get("fusion", {}).get("weight", 0.0)
        writer.write_scalars(
            report["step"], {**{f"val/{k}": v for k, v in values.items()}, "val/fusion_weight": weight}
        )
        if values[self.metric] > self.value:
            self.value, self.fusion_weight = values[self.metric], weight
            self.best.save(state, {"metric": f"val/{self.metric}", "value": self.value, "fusion_weight": weight})
            logging.info("New best val/%s = %.4f at step %d (fusion weight %g)", self.metric, self.value,
                         report["step"], weight)  # fmt: skip
        return values

    def chosen(self, state: Any, abstract_state: Any) -> tuple[Any, dict[str, Any]]:
        """The best checkpoint's state (restored into ``abstract_state``) and what chose it; ``state`` itself when
        no validation ever gave a finite value (the selection then says so)."""
        if self.value == -math.inf:
            return state, {"metric": None, "step": int(state.step), "note": "no finite validation value: the last step"}
        step = self.best.latest_step()
        return self.best.restore(abstract_state, step), {
            "metric": f"val/{self.metric}",
            "value": self.value,
            "step": step,
            "fusion_weight": self.fusion_weight,
        }

    def close(self) -> None:
        self.best.close()
