"""tensorflow-datasets builder for the procedural zero-shot SBIR set of `jsbir.data.synthetic`.

Nothing is downloaded: every image is rendered from a seed. Any (size, train_per_class,
test_per_class, seed) combination can be built, listed in BUILDER_CONFIGS or not::

    from jsbir.data import records
    from jsbir.data.builders import synthetic_sbir

    builder = synthetic_sbir.prepare("/tmp/tfds", synthetic_sbir.make_config(size=32, seed=1))
    train = records.load_split(builder, "train")  # both modalities, all 40 classes; images stay on disk

which is the same as::

    builder = synthetic_sbir.SyntheticSbir(config=make_config(...), data_dir="/tmp/tfds", file_format="array_record")
    builder.download_and_prepare(download_config=synthetic_sbir.OFFLINE)

A config object that is not in BUILDER_CONFIGS is accepted by tfds as a "custom data
configuration" (it only logs that); make_config hands back the listed object when the name
matches, because tfds refuses a *different* object carrying a listed name. OFFLINE turns off the
attempt to fetch a prepared copy from the public GCS bucket (already off by default in tfds 4.9.10,
kept explicit for other versions), so preparing works with no network at all. Data lands in
``data_dir/synthetic_sbir/<config name>/1.1.0`` (ArrayRecord files); a second prepare reuses it, and processes sharing
``data_dir`` prepare one at a time (``manual.prepare_lock``).

Splits "train" and "test" each hold per_class photos and per_class sketches of every class, photos
and sketches paired by instance_id; the zero-shot filtering by class (UNSEEN_CLASSES) happens in the
data layer, not here.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from jsbir.data import records, synthetic
from jsbir.data.builders import manual

OFFLINE = tfds.download.DownloadConfig(try_download_gcs=False)


@dataclasses.dataclass(eq=False)
class SyntheticSbirConfig(tfds.core.BuilderConfig):
    """What to render: image size, instances per class in each split, and the seed.

    Attributes:
        size: image height and width, 32..256.
        train_per_class: train instances per class (one photo and one sketch each).
        test_per_class: test instances per class (one photo and one sketch each).
        seed: dataset seed; poses, colours and strokes all follow from it.
    """

    size: int = 64
    train_per_class: int = 100
    test_per_class: int = 40
    seed: int = 0


def _new_config(size: int, train_per_class: int, test_per_class: int, seed: int):
    if not 32 <= size <= 256:
        raise ValueError(f"size must be in [32, 256], got {size}")
    for value in (train_per_class, test_per_class):
        if not 0 < value <= synthetic.TEST_INSTANCE_OFFSET:
            raise ValueError(f"per-class counts must be in [1, {synthetic.TEST_INSTANCE_OFFSET}]")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    return SyntheticSbirConfig(
        name=f"s{size}_tr{train_per_class}_te{test_per_class}_seed{seed}",
        description=(
            f"{size}px, {train_per_class} train and {test_per_class} test instances per class "
            f"and modality, seed {seed}."
        ),
        size=size,
        train_per_class=train_per_class,
        test_per_class=test_per_class,
        seed=seed,
    )


_LISTED = {
    c.name: c
    for c in (
        _new_config(64, 100, 40, 0),
        _new_config(32, 100, 40, 0),
        _new_config(128, 100, 40, 0),
    )
}


def make_config(
    size: int = 64, train_per_class: int = 100, test_per_class: int = 40, seed: int = 0
) -> SyntheticSbirConfig:
    """A config for any combination; its name encodes the values, e.g. "s64_tr100_te40_seed0".

    Args:
        size: image height and width, 32..256.
        train_per_class: train instances per class.
        test_per_class: test instances per class.
        seed: dataset seed, >= 0.

    Returns:
        The listed config object when one has this name (tfds insists on that identity), otherwise
        a new custom one.
    """
    config = _new_config(size, train_per_class, test_per_class, seed)
    return _LISTED.get(config.name, config)


class SyntheticSbir(tfds.core.GeneratorBasedBuilder):
    """Procedural sketches and photos of 40 shape-program classes (see jsbir.data.synthetic)."""

    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {
        "1.1.0": "ArrayRecord files (random access).",
        "1.0.0": "Initial release: 40 classes (12 primitives x 6 arrangements), photo and sketch "
        "modalities paired by instance_id, train/test poses disjoint.",
    }
    BUILDER_CONFIGS = list(_LISTED.values())
    DEFAULT_CONFIG_NAME = "s64_tr100_te40_seed0"
    # tfds 4.9.10 derives code_path through `importlib_resources`, which it only declares for
    # Python < 3.9 (tensorflow/datasets#11212), so preparing fails with ModuleNotFoundError unless
    # that backport happens to be installed. The path is known; state it.
    code_path = epath.Path(__file__)

    def _info(self) -> tfds.core.DatasetInfo:
        size = self.builder_config.size
        # DatasetInfo directly rather than dataset_info_from_configs: that one would pick up any
        # README.md or CITATIONS.bib lying next to this file as the dataset's description.
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__.split("\n\n")[0],
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(size, size, 3)),
                    "label": tfds.features.ClassLabel(names=list(synthetic.CLASS_NAMES)),
                    "modality": tfds.features.ClassLabel(names=list(synthetic.MODALITIES)),
                    "instance_id": tfds.features.Scalar(
                        dtype=np.int64, doc="label * 1e6 + instance; shared by a sketch-photo pair"
                    ),
                }
            ),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        del dl_manager  # nothing to download
        config = self.builder_config
        return {
            "train": self._generate_examples("train", config.train_per_class),
            "test": self._generate_examples("test", config.test_per_class),
        }

    def _generate_examples(self, split: str, per_class: int):
        config = self.builder_config
        for ex in synthetic.generate(split, config.seed, config.size, per_class):
            key = f"{ex['instance_id']}_{ex['modality']}"
            yield (
                key,
                {
                    "image": ex["image"],
                    "label": ex["label"],
                    "modality": ex["modality"],
                    "instance_id": ex["instance_id"],
                },
            )


def prepare(
    data_dir: str | os.PathLike,
    config: SyntheticSbirConfig | None = None,
) -> SyntheticSbir:
    """Build (or reuse) the dataset under data_dir, offline, and return its builder.

    Args:
        data_dir: tfds data directory.
        config: what to build; the default config (64 px, 100 + 40 per class, seed 0) if None.

    Returns:
        The prepared builder; read a split with `jsbir.data.records.load_split`.
    """
    with manual.prepare_lock(data_dir):  # several processes (hosts) may share data_dir: one prepares at a time
        builder = SyntheticSbir(
            config=config or make_config(), data_dir=os.fspath(data_dir), file_format=records.FILE_FORMAT
        )
        manual.remove_incomplete(Path(builder.data_dir).parent)
        builder.download_and_prepare(download_config=OFFLINE)
    return builder
