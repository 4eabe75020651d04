r"""ZSCMR, the simplified zero-shot framework: a multi-stream encoder-decoder over cached backbone features.

    python -m jsbir.main --config configs/zscmr.py
    python -m jsbir.main --config configs/zscmr.py:runlocal --workdir runs/zscmr-quick

Arguments after the colon, as for every method: ``runlocal``, ``dataset=synthetic``, ``size=64``, ``steps=N``,
``split=default``, ``classes=``, ``root=``, ``semantics=glove``; ``backbone=`` names the feature extractor (default
``efficientnet_lite0``, ImageNet weights from its installed package; ``vgg16`` / ``resnet50`` with
``--config.features.pretrained=/path/to/keras_weights.h5``). Features are extracted once and cached under
``config.features.cache_dir`` (default: ``jsbir_features`` in the tensorflow-datasets folder), keyed by the
backbone, its weights, the preprocessing, the image size and the images themselves (see jsbir/data/features.py)::

    python -m jsbir.main --config configs/zscmr.py:dataset=sketchy,split=eccv21,root=../shared/data/sketchy_mini,\
backbone=efficientnet_lite0,size=128 --workdir runs/zscmr-sketchy-mini

Your own features instead of images: ``dataset=features,root=/path/to/folder`` with ``classes.txt``,
``sketch.npy`` / ``sketch.mat`` and ``photo.npy`` / ``photo.mat`` (jsbir/data/feature_files.py).

The loss weights follow the paper (every term weighted 1, margin 0.5); the schedule, the encoder width and the
feature normalisation were chosen on the validation classes (seen classes held out from training), never on the
unseen test classes (docs/methods/zscmr.md lists what was tried).
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """Returns the ZSCMR config; see the module docstring for the arguments."""
    arg = common.parse_arg(arg, **{**common.COMMON_ARGS, "backbone": "efficientnet_lite0"})
    config = common.base_config("zscmr", arg)
    config.data.graph = "mst"  # the class graph of the topology term: a minimum spanning tree of the word vectors

    # The backbone extracts features; the model itself is the encoders, heads and decoders over them.
    config.features = ml_collections.ConfigDict()
    config.features.backbone = config.model.backbone
    config.features.backbone_args = config.model.backbone_args
    config.features.pretrained = config.model.pretrained
    config.features.batch_size = 64
    # The images are resized to this side before the backbone (0: as they are): ImageNet networks see 224 px.
    config.features.input_size = 0 if arg.runlocal else 224  # runlocal: the small images as they are, for speed
    config.features.cache_dir = ""  # empty: <tensorflow-datasets folder>/jsbir_features
    config.model = ml_collections.ConfigDict()
    config.model.hidden = (512,)  # encoder hidden widths; () is the paper's single Dense
    config.model.decoder_hidden = ()
    config.model.dropout = 0.5
    config.model.input_norm = True  # L2-normalise the features before the encoders
    config.model.unit_semantics = True  # scale the class vectors to unit length (GloVe's are about 4 to 6 long)

    config.loss = ml_collections.ConfigDict()
    config.loss.w_sem = 1.0  # encodings to their class vector
    config.loss.w_tri = 1.0  # cross-modal triplet, both directions
    config.loss.w_rec = 1.0  # cross reconstruction of the other modality's features
    config.loss.w_cls = 1.0  # classification over the seen classes
    config.loss.w_topo = 1.0  # class topology along the MST edges
    config.loss.margin = 0.5
    config.loss.mining = "all"  # every other-class negative of the batch (the paper draws one at random)
    config.loss.triplet = "per_sample"  # or "batch_mean", the released code's form

    config.train.batch_size = 128
    config.train.steps = 2000
    config.train.lr = 1e-3
    config.train.warmup_steps = 50
    config.train.log_every = 50
    config.train.checkpoint_every = 1000
    config.train.eval_every = 100
    config.eval.hash_bits = 32
    return common.finish(config, arg)
