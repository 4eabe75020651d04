"""Test set-up: eight fake CPU devices, set before JAX starts, TensorFlow kept off any GPU, and one compilation cache.

The tests train the same small models many times over, in this process and in the subprocesses they start: a
persistent JAX compilation cache (a temporary folder for each pytest process, removed at exit; or the caller's own
``JAX_COMPILATION_CACHE_DIR``) compiles each of them once.
"""

import atexit
import os
import shutil
import tempfile

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# One folder per pytest process: a worker of ``-n 2`` inherits its parent's folder, marked as the tests' own, and
# makes its own (JAX writes entries in place, so two processes compiling one program could read half an entry).
if os.environ.get("JAX_COMPILATION_CACHE_DIR", "") in ("", os.environ.get("JSBIR_TESTS_JAX_CACHE")):
    _cache = tempfile.mkdtemp(prefix="jsbir-tests-jax-cache-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = os.environ["JSBIR_TESTS_JAX_CACHE"] = _cache
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")

import jax  # noqa: E402

assert jax.device_count() == 8, "conftest must run before anything imports jax"
