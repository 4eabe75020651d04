"""Zero-shot splits shipped with jsbir: the published unseen-class lists, full class lists, and seeded random splits.

Each ``<name>.txt`` here holds one class name per line after a ``#`` header line naming its source:

========================  ==================  =====================================================================
split name                dataset             unseen classes
========================  ==================  =====================================================================
``eccv21``                Sketchy-Extended    21, Yelamarthi et al. (ECCV 2018), used for mAP@200 / P@200
``sake25``                Sketchy-Extended    25, SAKE split 1 (also DSN, ZSE-SBIR), used for mAP@all / P@100
``sake30``                TU-Berlin-Extended  30, SAKE
``doodle2search30``       QuickDraw-Extended  30, Doodle2Search
========================  ==================  =====================================================================

``classes_<dataset>.txt`` hold the full class lists (``sketchy`` 125, ``tuberlin`` 250, ``quickdraw`` 110,
``quickdraw345``), read with :func:`load_classes`.

``random<N>_seed<S>`` (e.g. ``random25_seed0``) draws N classes with ``numpy.random.default_rng(S)`` from the sorted
class list of the data (:func:`random_split`). SEM-PCYC's "25 random classes with seed 0" is not one canonical list
(it depends on their code's class order and RNG), so a number from a random split must name it, and published
comparisons should use the files above. A path to a text file in the same format also works as a split name.

Names are matched to the data's class folders exactly, else after lower-casing and treating spaces, ``-`` and
``_`` alike (the Doodle2Search file writes ``palm_tree`` where the folder is ``palm tree``).
"""

from __future__ import annotations

import importlib.resources
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

_CLASSES = "classes_"
_RANDOM = re.compile(r"^random(\d+)_seed(\d+)$")
_NUMBERED = re.compile(r"^(.+?)\s+\d+$")  # SAKE's "cname cid" lines


def _files() -> dict[str, importlib.resources.abc.Traversable]:
    root = importlib.resources.files(__name__)
    return {p.name[:-4]: p for p in root.iterdir() if p.name.endswith(".txt")}


def parse_class_list(text: str) -> tuple[str, ...]:
    """Class names of a split file: one per line, ``#`` lines and blank lines skipped, surrounding space stripped.

    A file whose every line ends in a class id (SAKE's ``cname_cid*.txt``: ``alarm clock 2``) loses the ids.
    """
    lines = [line.strip() for line in text.splitlines()]
    names = [line for line in lines if line and not line.startswith("#")]
    if names and all(_NUMBERED.match(n) for n in names):
        names = [_NUMBERED.match(n).group(1) for n in names]
    return tuple(names)


def available_splits() -> tuple[str, ...]:
    """Names of the shipped unseen-class splits (random splits are built on demand)."""
    return tuple(sorted(n for n in _files() if not n.startswith(_CLASSES)))


def available_class_lists() -> tuple[str, ...]:
    """Datasets whose full class list is shipped."""
    return tuple(sorted(n[len(_CLASSES) :] for n in _files() if n.startswith(_CLASSES)))


def split_path(name: str) -> str:
    """Where a shipped split file lives (for error messages and reports)."""
    files = _files()
    if name not in files or name.startswith(_CLASSES):
        raise ValueError(f"unknown split {name!r}; shipped splits: {', '.join(available_splits())}")
    return str(files[name])


def load_split(name: str) -> tuple[str, ...]:
    """The unseen classes of a shipped split, in file order.

    Raises:
      ValueError: for an unknown name, listing the shipped ones.
    """
    split_path(name)
    return parse_class_list(_files()[name].read_text(encoding="utf-8"))


def load_classes(dataset: str) -> tuple[str, ...]:
    """The full class list of ``dataset`` ("sketchy", "tuberlin", "quickdraw", "quickdraw345")."""
    files = _files()
    if _CLASSES + dataset not in files:
        raise ValueError(f"no class list for {dataset!r}; shipped: {', '.join(available_class_lists())}")
    return parse_class_list(files[_CLASSES + dataset].read_text(encoding="utf-8"))


def random_split(class_names: Sequence[str], num: int, seed: int) -> tuple[str, ...]:
    """``num`` classes drawn with ``numpy.random.default_rng(seed).choice`` (no replacement) from the sorted names.

    Returns:
      The chosen names, sorted.
    """
    ordered = sorted(class_names)
    if not 0 < num < len(ordered):
        raise ValueError(f"a random split needs 0 < N < {len(ordered)} classes, got N={num}")
    chosen = np.random.default_rng(seed).choice(len(ordered), size=num, replace=False)
    return tuple(sorted(ordered[i] for i in chosen))


def resolve_split(name: str, class_names: Sequence[str]) -> tuple[tuple[str, ...], str]:
    """The unseen class names of a split given by name, and where they came from.

    Args:
      name: a shipped split (``eccv21``), ``random<N>_seed<S>``, or a path to a class-list file.
      class_names: the data's classes (random splits draw from them).

    Returns:
      (unseen names as written in the source, source description for errors).
    """
    match = _RANDOM.match(name)
    if match:
        num, seed = int(match.group(1)), int(match.group(2))
        return random_split(class_names, num, seed), f"random split {name!r}"
    if name in available_splits():
        return load_split(name), split_path(name)
    path = Path(name).expanduser()
    if path.suffix and path.is_file():
        return parse_class_list(path.read_text(encoding="utf-8")), str(path)
    raise ValueError(
        f"unknown split {name!r}: not a shipped split ({', '.join(available_splits())}), not random<N>_seed<S>, "
        "and not an existing class-list file"
    )


def normalize(name: str) -> str:
    """Lower case, with runs of spaces, ``-`` and ``_`` as one ``_``."""
    return re.sub(r"[\s_\-]+", "_", name.strip().lower())


def match_classes(
    class_names: Sequence[str], names: Sequence[str], source: str, what: str = "split"
) -> tuple[int, ...]:
    """Sorted label ids of ``names`` in ``class_names``: exact match first, then :func:`normalize` d; ``what``
    names the list in errors.

    Raises:
      ValueError: naming every class of ``source`` that the data lack (or that match ambiguously).
    """
    exact = {n: i for i, n in enumerate(class_names)}
    loose: dict[str, list[int]] = {}
    for i, n in enumerate(class_names):
        loose.setdefault(normalize(n), []).append(i)
    ids, missing = set(), []
    for n in names:
        if n in exact:
            ids.add(exact[n])
        elif len(loose.get(normalize(n), ())) == 1:
            ids.add(loose[normalize(n)][0])
        else:
            missing.append(n)
    if missing:
        raise ValueError(
            f"{what} {source} names classes that the data lack: {missing} (the data have {len(class_names)} classes)"
        )
    return tuple(sorted(ids))
