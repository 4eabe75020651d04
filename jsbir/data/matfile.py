"""MATLAB ``.mat`` files: named variables read with scipy, MATLAB v7.3 (HDF5) files through h5py.

QMUL-V1 stores its images in them, and the ZSCMR authors' work kept its features and labels in them, so the QMUL
builder and the feature files (:mod:`jsbir.data.feature_files`) share this reader.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


class MatFileError(ValueError):
    """A ``.mat`` file cannot be read; the message names the file."""


def read_variables(path: str | Path, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The variables of ``names`` that ``path`` holds (absent ones are left out).

    v7.3 files are HDF5 and store arrays in column-major order, so their axes are reversed here to match what
    MATLAB and scipy show.

    Raises:
      MatFileError: the file cannot be read (damaged, or not a .mat file).
    """
    import scipy.io

    try:
        try:
            mat = scipy.io.loadmat(path, variable_names=list(names))
            return {name: np.asarray(mat[name]) for name in names if name in mat}
        except NotImplementedError:  # v7.3
            import h5py

            with h5py.File(path, "r") as f:
                return {name: np.transpose(f[name][()]) for name in names if name in f}
    except Exception as err:  # scipy and h5py fail on a damaged file with many exception types
        raise MatFileError(f"cannot read {path}: {type(err).__name__}: {err}") from err
