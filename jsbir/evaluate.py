"""Evaluation: embed the unseen-class queries and gallery, rank, compute every metric variant, and report.

Embeddings are computed by the method's jitted ``embed`` on batches sharded over the mesh, gathered to the host,
and scored in plain numpy by ``jsbir.metrics``. Only process 0 writes ``report.json`` and the retrieval grid.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import jax
import numpy as np
from PIL import Image, ImageDraw

from jsbir import metrics, sharding
from jsbir.data import pipeline


class Evaluator:
    """Embeds and scores the zero-shot evaluation sets of one dataset for one model.

    Args:
      method: the method module (``embed`` is used).
      model: the method's Model.
      data: the SbirData.
      config: the run config (``eval`` section and names for the report).
      mesh: the device mesh.
    """

    def __init__(self, method: Any, model: Any, data: Any, config: Any, mesh: Any):
        self.data, self.config, self.mesh = data, config, mesh
        self.queries, self.gallery = data.evaluation_sets()
        self._embed = {
            modality: jax.jit(lambda v, x, m=modality: method.embed(model, v, x, m))
            for modality in ("sketch", "photo")
        }

    def embed_all(self, variables: Any, images: pipeline.Images, modality: str) -> np.ndarray:
        """(N, D) float32 embeddings of ``images`` in order."""
        chunks = []
        for batch in pipeline.eval_batches(
            images, self.config.eval.batch_size, jax.process_index(), jax.process_count()
        ):
            out = self._embed[modality](variables, sharding.to_global(batch["image"], self.mesh))
            mask = sharding.to_host(sharding.to_global(batch["mask"], self.mesh))
            chunks.append(sharding.to_host(out)[mask])
        return np.concatenate(chunks).astype(np.float32)

    def run(
        self,
        state: Any,
        workdir: str,
        tag: str,
        write: bool = True,
        writer: Any = None,
        extra: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Evaluates ``state`` and returns the report; writes it (and a grid PNG) when ``write``.

        ``extra`` is merged into the report before it is written (a dict value into the report's dict of the same
        key, e.g. more ``timings``).
        """
        cfg = self.config
        variables = {"params": state.params, **state.model_state}
        t0 = time.perf_counter()
        q = self.embed_all(variables, self.queries, "sketch")
        g = self.embed_all(variables, self.gallery, "photo")
        t1 = time.perf_counter()
        scores = q @ g.T
        values = metrics.retrieval_metrics(
            scores, self.queries.label, self.gallery.label, ks=tuple(cfg.eval.ks)
        )
        bits = min(cfg.eval.hash_bits, g.shape[1])
        itq = metrics.fit_itq(g, bits, seed=cfg.seed)
        hamming = metrics.hamming_scores(
            metrics.pack_codes(itq.encode(q)), metrics.pack_codes(itq.encode(g)), bits
        )
        hashed = metrics.retrieval_metrics(
            hamming, self.queries.label, self.gallery.label, ks=tuple(cfg.eval.ks)
        )
        values.update(
            {f"itq{bits}/{k}": v for k, v in hashed.items() if not k.endswith("[chance]")}
        )
        target = _paired_targets(self.queries.instance_id, self.gallery.instance_id)
        if target is not None:
            values.update(metrics.fine_grained_metrics(scores, target))
        t2 = time.perf_counter()
        info = self.data.info
        report = {
            "tag": tag,
            "method": cfg.method,
            "dataset": info.name,
            "split": info.split,
            "generalized": info.generalized,
            "step": int(jax.device_get(state.step)),
            "embedding_dim": int(q.shape[1]),
            "num_queries": int(len(q)),
            "num_gallery": int(len(g)),
            "num_unseen_classes": len(info.unseen),
            "metrics": values,
            "metric_descriptions": metrics.METRIC_DESCRIPTIONS,
            "timings": {"embed_s": t1 - t0, "metrics_s": t2 - t1},
        }
        for key, value in (extra or {}).items():
            if isinstance(value, dict) and isinstance(report.get(key), dict):
                report[key].update(value)
            else:
                report[key] = value
        if writer is not None:
            writer.write_scalars(report["step"], {f"eval/{k}": v for k, v in values.items()})
        if write:
            write_report(report, workdir)
            if jax.process_index() == 0:
                retrieval_grid(
                    self.queries, self.gallery, scores, cfg.eval.grid_queries, cfg.eval.grid_topk
                ).save(os.path.join(workdir, "retrieval_grid.png"))
        return report


def _paired_targets(query_ids: np.ndarray, gallery_ids: np.ndarray) -> np.ndarray | None:
    """Gallery index of each query's own photo, or None when some query's photo is absent."""
    index = {int(i): n for n, i in enumerate(gallery_ids)}
    target = np.array([index.get(int(i), -1) for i in query_ids])
    return None if (target < 0).any() or (query_ids < 0).any() else target


def write_report(report: dict[str, Any], workdir: str) -> None:
    """Writes ``report.json`` (process 0) and prints the main metrics as a table."""
    if jax.process_index() != 0:
        return
    with open(os.path.join(workdir, "report.json"), "w") as f:
        json.dump(report, f, indent=2, sort_keys=True)
    print(format_table(report))


def format_table(report: dict[str, Any]) -> str:
    """A printable table of a report's metrics, with the untrained model beside when present."""
    untrained = report.get("untrained", {})
    lines = [
        f"{report['method']} on {report['dataset']} (split {report['split']}, step {report['step']}, "
        f"{report['num_queries']} queries x {report['num_gallery']} gallery, "
        f"dim {report['embedding_dim']})",
        f"{'metric':<28}{'trained':>10}" + (f"{'untrained':>12}" if untrained else ""),
    ]
    for key, value in report["metrics"].items():
        row = f"{key:<28}{value:>10.4f}"
        if key in untrained:
            row += f"{untrained[key]:>12.4f}"
        lines.append(row)
    return "\n".join(lines)


def retrieval_grid(
    queries: pipeline.Images, gallery: pipeline.Images, scores: np.ndarray, rows: int, topk: int
) -> Image.Image:
    """A PNG-ready grid: one query sketch per row (distinct classes first), then its top-k photos framed green
    when of the query's class and red otherwise."""
    _, first = np.unique(queries.label, return_index=True)
    picked = np.sort(first)[:rows]
    order = metrics.rank(scores[picked])[:, :topk]
    size = queries.image.shape[1]
    cell, gap = size + 6, 10
    canvas = Image.new("RGB", (cell * (topk + 1) + gap, cell * len(picked)), "white")
    draw = ImageDraw.Draw(canvas)
    for r, (qi, ranked) in enumerate(zip(picked, order, strict=True)):
        canvas.paste(Image.fromarray(queries.image[qi]), (3, r * cell + 3))
        for c, gi in enumerate(ranked):
            x, y = gap + (c + 1) * cell, r * cell
            ok = gallery.label[gi] == queries.label[qi]
            draw.rectangle(
                [x, y, x + cell - 1, y + cell - 1], fill=(0, 170, 0) if ok else (210, 0, 0)
            )
            canvas.paste(Image.fromarray(gallery.image[gi]), (x + 3, y + 3))
    return canvas
