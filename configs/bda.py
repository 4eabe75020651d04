r"""BDA-SketRet: bi-level domain adaptation for zero-shot SBIR.

    python -m jsbir.main --config configs/bda.py
    python -m jsbir.main --config configs/bda.py:runlocal --workdir runs/bda-quick

Arguments after the colon (comma separated): ``runlocal`` (a run of a few dozen steps, for a laptop or a smoke
test), ``dataset=synthetic``, ``size=64`` (image side in pixels), ``steps=N``. Any field can also be set with
``--config.train.lr=3e-4`` style flags; an unknown field is an error that names it.
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """Returns the BDA-SketRet config; see the module docstring for the arguments."""
    arg = common.parse_arg(arg, runlocal=False, dataset="synthetic", size=64, steps=0)
    config = ml_collections.ConfigDict()
    config.method = "bda"
    config.seed = 0
    config.init_from = ""

    config.data = common.data_config(arg.dataset, arg.size)

    config.model = ml_collections.ConfigDict()
    config.model.backbone = "compact_cnn"
    config.model.width = 32
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
    return config
