"""Evaluation: embed the protocol's queries and gallery, rank, compute every metric variant, and report.

Embeddings come from the method's jitted ``embed`` on batches sharded over the mesh, one pass per test-time view,
gathered to the host and scored in plain numpy by ``jsbir.metrics``. Scores are the dot product of the embeddings
(cosine, since methods L2-normalise) or the method's learned ``score``, averaged over views, and re-ranked when
``config.eval.rerank`` asks (``jsbir.eval.rerank``: diffusion over the gallery's neighbour graph). They are scored
and ranked ``config.eval.query_block`` queries at a time (``Protocol.metrics_blocked``), so memory is bounded by a
block; only re-ranking, which mixes whole rows, holds the whole matrix. A run over a pretrained backbone is also
scored by that backbone's own features, untrained (``frozen/`` metrics), and its ranking score may fuse them in at a
weight validation chooses (``jsbir.eval.frozen``). Beside the float embedding every report gives ITQ codes fitted
on the gallery's embeddings and, for methods that learn them, the method's own codes, each ranked by Hamming
distance, with the bytes each gallery item takes. Codes of both kinds come from the first (plain) view. Only
process 0 writes ``report.json`` and the retrieval grid.
"""

from __future__ import annotations

import functools
import math
import os
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from jsbir import metrics, sharding
from jsbir.data import pipeline
from jsbir.data.types import Images, SbirData
from jsbir.eval import frozen, grid, protocols, report, rerank

RowScores = Callable[[slice], np.ndarray]  # the (rows, N) scores of the queries ``rows`` against the gallery


class Evaluator:
    """Embeds and scores the evaluation sets of one dataset for one model.

    Args:
      method: the method's declaration (``jsbir.methods.api.Method``).
      model: the method's Model.
      data: the dataset.
      config: the run config (``eval`` section and names for the report).
      mesh: the device mesh.
      split: "test" (the protocol's test sets) or "validation" (its sets from the held-out validation examples).
    """

    def __init__(self, method: Any, model: Any, data: SbirData, config: Any, mesh: Any, split: str = "test"):
        self.method, self.config, self.mesh, self.info, self.split = method, config, mesh, data.info, split
        self.spec = method.evaluation(config)
        self.preprocessing = method.inputs(config).preprocess
        self.protocol = protocols.get_protocol(self.spec.protocol)
        choose = {"test": self.protocol.sets, "validation": self.protocol.validation_sets}
        if split not in choose:
            raise ValueError(f"evaluation split {split!r} is not one of {sorted(choose)}")
        self.sets = choose[split](data)
        modalities = ("sketch", "photo")
        self._embed = {m: jax.jit(lambda v, x, m=m: method.embed(model, v, x, m)) for m in modalities}
        self._codes = (
            {m: jax.jit(lambda v, x, m=m: method.codes(model, v, x, m)) for m in modalities} if self.spec.codes else {}
        )
        self._score = jax.jit(lambda v, q, g: method.score(model, v, q, g)) if method.score else None
        self._domain = (
            {m: jax.jit(lambda v, x, m=m: method.domain_logit(model, v, x, m)) for m in modalities}
            if method.domain_logit
            else None
        )
        # .get: the config of a run made before eval.rerank existed has no such field
        self._rerank = rerank.Diffusion(config, mesh) if config.eval.get("rerank") else None
        if self._rerank is not None and self._score is not None:
            raise ValueError(
                f"config.eval.rerank={config.eval.rerank!r} spreads cosine scores, but {config.method} ranks by a "
                "learned score: set config.eval.rerank=''"
            )
        self.fusion = frozen.fusion_setting(config, self.protocol.name)
        wanted = config.eval.get("frozen", True) or self.fusion != "off"
        self._frozen = (
            frozen.FrozenBaseline(config, mesh, self.preprocessing, self.spec.views, split)
            if wanted and frozen.pretrained_backbone(config) is not None
            else None
        )
        self._frozen_metrics: dict[str, float] | None = None

    def encode(self, variables: Any, images: Images, modality: str) -> tuple[list[np.ndarray], np.ndarray | None]:
        """Embeddings of ``images`` in order: one (N, D) float32 array per view, and the method's (N, bits) codes
        of the first view (None when it learns none).

        Raises:
          FloatingPointError: an embedding is NaN or infinite (a diverged or damaged model).
        """
        cfg = self.config.eval
        views: list[list[np.ndarray]] = [[] for _ in range(self.spec.views)]
        codes = []
        batches = pipeline.eval_batches(
            images, cfg.batch_size, self.preprocessing, self.spec.views, jax.process_index(), jax.process_count()
        )
        for xs, mask in sharding.global_batches(batches, self.mesh):
            for v, x in enumerate(xs):
                views[v].append(sharding.to_host(self._embed[modality](variables, x))[mask])
                if v == 0 and self._codes:
                    codes.append(sharding.to_host(self._codes[modality](variables, x))[mask])
        out = [np.concatenate(chunks).astype(np.float32) for chunks in views]
        if not all(np.isfinite(e).all() for e in out):
            raise FloatingPointError(f"{modality} embeddings hold NaN or infinite values: the model has diverged")
        return out, (np.concatenate(codes) if codes else None)

    def similarity(self, variables: Any, queries: np.ndarray, gallery: np.ndarray) -> np.ndarray:
        """(Q, N) float32 scores of one view: the method's learned score, else the dot product."""
        if self._score is None:
            return queries @ gallery.T
        step = self.config.eval.batch_size
        return np.concatenate(
            [np.asarray(self._score(variables, queries[i : i + step], gallery)) for i in range(0, len(queries), step)]
        ).astype(np.float32)

    def view_scores(
        self,
        variables: Any,
        q_views: list[np.ndarray],
        g_views: list[np.ndarray],
        rows: slice | np.ndarray = slice(None),
    ) -> np.ndarray:
        """(Q, N) float32 scores of the float embeddings of the queries ``rows`` (a slice or indices; all by default):
        :meth:`similarity` averaged over the views."""
        scores = self.similarity(variables, q_views[0][rows], g_views[0])
        for q, g in zip(q_views[1:], g_views[1:], strict=True):
            scores += self.similarity(variables, q[rows], g)
        return scores / len(q_views)

    def domain_accuracy(self, variables: Any) -> dict[str, float]:
        """How well the method's domain discriminator tells this evaluation's sketches from its photos: the share of
        the first ``eval.batch_size`` queries and gallery items (plain view) on the right side of logit 0, as
        ``domain_accuracy`` ({} for a method without one). 0.5 is a discriminator the features fool completely."""
        if self._domain is None:
            return {}
        right = []
        for images, modality, sign in ((self.sets.queries, "sketch", 1.0), (self.sets.gallery, "photo", -1.0)):
            head = images.select(np.arange(min(len(images), self.config.eval.batch_size)))
            batches = pipeline.eval_batches(head, self.config.eval.batch_size, self.preprocessing, 1,
                                            jax.process_index(), jax.process_count())  # fmt: skip
            for (x,), mask in sharding.global_batches(batches, self.mesh):
                right.append(sign * sharding.to_host(self._domain[modality](variables, x))[mask] > 0)
        return {"domain_accuracy": float(np.mean(np.concatenate(right)))}

    def select_metric(self) -> str:
        """The validation metric that chooses checkpoints (and the fusion weight)."""
        train = self.config.get("train") or {}
        return train.get("select_metric", "") or self.protocol.select_metric

    def frozen_metrics(self) -> dict[str, float]:
        """The frozen baseline's metrics (``frozen/`` keys; computed once), or {} when there is no baseline."""
        if self._frozen is None:
            return {}
        if self._frozen_metrics is None:
            rows = self._frozen.score_rows(self.sets.queries, self.sets.gallery)
            values = self.protocol.metrics_blocked(rows, self.sets, self.config.eval)
            self._frozen_metrics = {frozen.PREFIX + k: v for k, v in values.items() if not k.endswith("[chance]")}
        return self._frozen_metrics

    def fused(self, learned: RowScores, weight: float | None) -> tuple[RowScores, float, dict[str, float]]:
        """The ranking scores (``rows -> scores``) of the ``learned`` ones fused with the frozen baseline's, the
        weight, and the learned scores' own metrics when the weight is not 0 (``learned/`` keys).

        ``weight`` None: 0, unless fusion is on and this is the validation split, where the weight of
        ``frozen.FUSION_WEIGHTS`` that scores best by :meth:`select_metric` is chosen (a tie keeps the smaller).
        """
        if self.fusion == "off" or self._frozen is None or (weight is None and self.split != "validation"):
            return learned, 0.0, {}
        baseline = self._frozen.score_rows(self.sets.queries, self.sets.gallery)

        def fused_rows(w: float) -> RowScores:
            return lambda rows: frozen.fuse(learned(rows), baseline(rows), w)

        if weight is None:
            metric, best = self.select_metric(), -np.inf
            for w in frozen.FUSION_WEIGHTS:
                value = self.protocol.metrics_blocked(fused_rows(w), self.sets, self.config.eval)[metric]
                if value > best:
                    weight, best = w, value
        if not weight:
            return learned, 0.0, {}
        values = self.protocol.metrics_blocked(learned, self.sets, self.config.eval)
        own = {f"learned/{k}": v for k, v in values.items() if not k.endswith("[chance]")}
        return fused_rows(weight), float(weight), own

    def _hamming_metrics(self, prefix: str, q: np.ndarray, g: np.ndarray, bits: int) -> dict[str, float]:
        packed_q, packed_g = metrics.pack_codes(q), metrics.pack_codes(g)
        values = self.protocol.metrics_blocked(
            lambda rows: metrics.hamming_scores(packed_q[rows], packed_g, bits), self.sets, self.config.eval
        )
        return {f"{prefix}/{k}": v for k, v in values.items() if not k.endswith("[chance]")}

    def run(
        self,
        state: Any,
        workdir: str,
        tag: str,
        write: bool = True,
        writer: Any = None,
        extra: dict[str, Any] | None = None,
        fusion_weight: float | None = None,
    ) -> dict[str, Any]:
        """Evaluates ``state`` and returns the report; writes it (and a grid PNG) when ``write``.

        ``extra`` is merged into the report before it is written (a dict value into the report's dict of the same
        key, e.g. more ``timings``). ``fusion_weight``: the frozen baseline's share of the ranking score (what
        validation chose; see :meth:`fused`).
        """
        cfg, sets = self.config, self.sets
        variables = {"params": state.params, **state.model_state}
        t0 = time.perf_counter()
        q_views, q_codes = self.encode(variables, sets.queries, "sketch")
        g_views, g_codes = self.encode(variables, sets.gallery, "photo")
        t1 = time.perf_counter()
        learned_rows = functools.partial(self.view_scores, variables, q_views, g_views)
        score_rows, weight, learned = self.fused(learned_rows, fusion_weight)
        t_rerank = 0.0
        if self._rerank is not None:
            # Diffusion mixes every gallery column of a query's row, so it keeps the whole score matrix.
            whole = score_rows(slice(None))
            t_rerank = time.perf_counter()
            whole = self._rerank(whole, sets.gallery, g_views)
            t_rerank = time.perf_counter() - t_rerank
            score_rows = whole.__getitem__
        # Otherwise scored a block of queries at a time (config.eval.query_block): memory is bounded by the block.
        values = self.protocol.metrics_blocked(score_rows, sets, cfg.eval)
        values.update(learned)
        values.update(self.frozen_metrics())
        values.update(self.domain_accuracy(variables))
        dim = q_views[0].shape[1]
        scoring = "learned score" if self._score else "dot product"
        if weight:
            scoring += f", fused with the frozen baseline's cosine at weight {weight}"
        if self._rerank is not None:
            scoring += f", re-ranked by {self._rerank.describe()}"
        representations = {"float": {"description": f"{dim}-d float32, {scoring}", "bytes_per_item": 4 * dim}}
        bits = min(cfg.eval.hash_bits, dim)
        convention = cfg.eval.itq
        q_itq, g_itq = metrics.itq_codes(q_views[0], g_views[0], bits, convention, seed=cfg.seed)
        values.update(self._hamming_metrics(f"itq{bits}", q_itq, g_itq, bits))
        fitted = {"gallery": "fitted on the gallery", "sempcyc": "SEM-PCYC's: fitted on the queries"}[convention]
        representations[f"itq{bits}"] = {
            "description": f"ITQ {bits}-bit codes of the float embedding ({fitted}), Hamming",
            "bytes_per_item": math.ceil(bits / 8),
        }
        if q_codes is not None:
            code_bits = q_codes.shape[1]
            values.update(self._hamming_metrics(f"hash{code_bits}", q_codes, g_codes, code_bits))
            representations[f"hash{code_bits}"] = {
                "description": f"the method's learned {code_bits}-bit codes, Hamming",
                "bytes_per_item": math.ceil(code_bits / 8),
            }
        t2 = time.perf_counter()
        info = self.info
        result = {
            "tag": tag,
            "method": cfg.method,
            "dataset": info.name,
            "split": info.split,
            "generalized": info.generalized,
            "semantics": info.semantics_setting,
            "protocol": self.protocol.name,
            "evaluated_on": self.split,
            "validation_classes": [info.class_names[c] for c in info.validation],
            "skipped_files": list(info.skipped_files),
            "views": self.spec.views,
            "rerank": self._rerank.describe() if self._rerank is not None else "none",
            "frozen": self._frozen.describe() if self._frozen is not None else "none (no pretrained weights)",
            "fusion": {"setting": self.fusion, "weight": weight},
            "step": int(jax.device_get(state.step)),
            "embedding_dim": int(dim),
            "num_queries": len(sets.queries),
            "num_gallery": len(sets.gallery),
            "num_unseen_classes": len(info.unseen),
            "metrics": values,
            "metric_descriptions": metrics.METRIC_DESCRIPTIONS,
            "representations": representations,
            "timings": {"embed_s": t1 - t0, "rerank_s": t_rerank, "metrics_s": t2 - t1 - t_rerank},
        }
        for key, value in (extra or {}).items():
            if isinstance(value, dict) and isinstance(result.get(key), dict):
                result[key].update(value)
            else:
                result[key] = value
        if writer is not None:
            writer.write_scalars(result["step"], {f"eval/{k}": v for k, v in values.items()})
        if write:
            report.write_report(result, workdir, "report.json" if self.split == "test" else f"{self.split}.json")
            if (
                jax.process_index() == 0
                and self.split == "test"
                and sets.queries.image.ndim == sets.gallery.image.ndim == 4
            ):
                picture = grid.retrieval_grid(sets, score_rows, cfg.eval.grid_queries, cfg.eval.grid_topk)
                picture.save(os.path.join(workdir, "retrieval_grid.png"))
        return result
