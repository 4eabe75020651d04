"""The method contract: what a method module declares and exports, and all the shared code ever reads of it.

A method is one module ``jsbir.methods.<name>`` ending with ``METHOD = Method(...)``. The trainer, the evaluator
and the data pipeline are shared and read only these declarations, so adding a method touches its own module,
its config, its docs page (``docs/methods/<name>.md``) and its tests. ``docs/contract.md`` walks through it.

Signatures (``model`` is the method's ``Model`` instance, ``variables`` is ``{"params": ..., **model_state}``):

- ``Model.from_config(model_config, info) -> Model``: a Flax Linen module built from ``config.model`` and the
  dataset's :class:`~jsbir.data.types.DatasetInfo` (class graph, semantic distances and seen classes arrive there
  as arrays). ``Model.init(rngs, example_batch, train=False)`` must create every variable, where
  ``example_batch`` has the keys of the declared sampler (see :func:`jsbir.data.pipeline.example_batch`).
- ``loss_fn(model, params, model_state, batch, rng, progress, config) -> (loss, (model_state, measurements))``:
  the training objective on one global batch; ``progress`` is the training fraction in [0, 1] for schedules,
  ``config`` the ``config.loss`` section, ``measurements`` a dict of scalars that the trainer logs.
- ``embed(model, variables, inputs, modality) -> (B, D)`` float embeddings of one modality ("sketch" or "photo").
  A photo's embedding must depend on that photo alone: gallery items are embedded once, without any sketch.
- ``codes(model, variables, inputs, modality) -> (B, bits)`` +-1 codes, for methods that learn their own.
- ``score(model, variables, query_embeddings, gallery_embeddings) -> (Q, G)`` similarities (higher = closer),
  for methods that learn their distance; the default is the dot product of the embeddings.
- ``domain_logit(model, variables, inputs, modality) -> (B,)`` the logit that each input is a sketch, for methods
  that align the modalities adversarially: the evaluator reports how well the domains still separate.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """What a method trains on.

    Attributes:
      sampler: how a training example is assembled, a name in ``jsbir.data.samplers.SAMPLERS``: "class_pairs"
        (a sketch and a photo of its class), "instance_triplets" (a sketch, its own photo and a hard negative) or
        "features" (class pairs of pre-extracted feature vectors).
      preprocess: how a stored example becomes a model input, a name in
        ``jsbir.data.preprocess.PREPROCESSORS``: "rgb", "gray_crop" or "features".
    """

    sampler: str = "class_pairs"
    preprocess: str = "rgb"


@dataclasses.dataclass(frozen=True)
class EvalSpec:
    """How a method is evaluated.

    Attributes:
      protocol: a name in ``jsbir.eval.protocols.PROTOCOLS``: "zero_shot" (unseen-class sketches against
        unseen-class photos, class-level relevance) or "fine_grained" (test sketches against test photos, each
        sketch's own photo is the target; acc@K).
      views: test-time views averaged (scores of view v of the queries against view v of the gallery, averaged
        over v); see ``jsbir.data.preprocess`` for what each view is.
      codes: whether the method learns its own binary codes (``Method.codes``), reported beside the float
        embedding and ITQ.
      code_bits: the length of those codes.
    """

    protocol: str = "zero_shot"
    views: int = 1
    codes: bool = False
    code_bits: int = 0

    def __post_init__(self):
        if self.views < 1:
            raise ValueError(f"a method needs at least one test-time view, got {self.views}")
        if self.codes and self.code_bits < 1:
            raise ValueError("a method with its own codes must say how many bits they have (code_bits)")


@dataclasses.dataclass(frozen=True)
class Method:
    """A method's declarations and exports (see the module docstring for the signatures).

    Attributes:
      name: the registry name, equal to the module name and to ``config.method``.
      Model: the Flax module class, with ``from_config``.
      loss_fn: the training objective.
      embed: float embeddings of one modality.
      inputs: ``config -> InputSpec``.
      evaluation: ``config -> EvalSpec``.
      rng_streams: Flax RNG streams the model draws from besides "params" (each gets its own key at init;
        ``loss_fn`` receives one key and splits it itself).
      codes: the method's own binary codes, or None.
      score: the method's learned similarity, or None for the dot product.
      frozen: ``config -> regex`` of parameters the method itself keeps fixed (a teacher network); the trainer
        joins it with ``config.train.freeze``.
      domain_logit: the method's domain discriminator on one modality's inputs, or None.
    """

    name: str
    Model: type
    loss_fn: Callable[..., Any]
    embed: Callable[..., Any]
    inputs: Callable[[Any], InputSpec] = lambda config: InputSpec()
    evaluation: Callable[[Any], EvalSpec] = lambda config: EvalSpec()
    rng_streams: tuple[str, ...] = ()
    codes: Callable[..., Any] | None = None
    score: Callable[..., Any] | None = None
    frozen: Callable[[Any], str] = lambda config: ""
    domain_logit: Callable[..., Any] | None = None

    def freeze_pattern(self, config: Any) -> str:
        """The regex of every frozen parameter: ``config.train.freeze`` and the method's own."""
        return "|".join(p for p in (config.train.get("freeze", ""), self.frozen(config)) if p)

    def init_rngs(self, rng: jax.Array) -> dict[str, jax.Array]:
        """The ``rngs`` dict for ``Model.init``: ``rng`` itself for "params", a key folded from it per stream."""
        return {"params": rng, **{name: jax.random.fold_in(rng, i + 1) for i, name in enumerate(self.rng_streams)}}
