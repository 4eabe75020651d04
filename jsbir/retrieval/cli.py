"""The ``evaluate``, ``index`` and ``search`` subcommands of ``python -m jsbir.main``.

::

    python -m jsbir.main evaluate --workdir RUN [--checkpoint auto|best|latest|N] [--split test|validation] [--out FILE]
    python -m jsbir.main index --workdir RUN (--photos DIR | --split test) --out INDEX [--overwrite | --add]
        [--skip-bad]
    python -m jsbir.main search --index INDEX (--sketch FILE... | --sketches DIR | --query-index DIR) [--k 10]
        [--backend faiss|jax|numpy|faiss_ivf] [--representation float|itq|hash] [--json FILE] [--grid FILE.png]

The run's config is the one it wrote (``RUN/config.json``) unless ``--config configs/x.py[:args]`` names one;
``--config.section.field=value`` overrides either (``evaluate --workdir RUN --config.eval.rerank=diffusion``
evaluates a run with re-ranking). A checkpoint of another model is refused. Errors are one line
on stderr and exit status 2. ``docs/retrieval.md`` has the details.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import numpy as np

COMMANDS = ("evaluate", "index", "search")


def _run_arguments(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument("--workdir", required=required, help="the trained run's folder")
    parser.add_argument("--config", default=None, help="config file[:args] (default: the one the run wrote)")
    choose = "auto (the validation-chosen checkpoint when the run kept one, else the newest), best, latest, or a step"
    parser.add_argument("--checkpoint", default="auto", help=choose)


def build_parser(command: str) -> argparse.ArgumentParser:
    """The arguments of one subcommand."""
    parser = argparse.ArgumentParser(prog=f"python -m jsbir.main {command}", allow_abbrev=False)
    if command == "evaluate":
        _run_arguments(parser)
        parser.add_argument("--split", default="test", choices=("test", "validation"))
        parser.add_argument("--out", default=None, help="report file (default: RUN/evaluation_<split>.json)")
    elif command == "index":
        _run_arguments(parser, required=False)
        source = parser.add_mutually_exclusive_group(required=True)
        source.add_argument("--photos", help="a folder of images (recursively; a subfolder is a class)")
        source.add_argument("--split", choices=("test", "validation"), help="the run's own evaluation set")
        modality = "photo: a gallery; sketch: queries (with --split: the protocol's query sketches)"
        parser.add_argument("--modality", default="photo", choices=("photo", "sketch"), help=modality)
        parser.add_argument("--out", required=True, help="the index folder to write")
        parser.add_argument("--overwrite", action="store_true", help="replace an existing index")
        parser.add_argument("--add", action="store_true", help="add the --photos to the index at --out")
        parser.add_argument("--batch", type=int, default=256, help="images read and embedded at a time")
        skip = "leave out unreadable photos (listed on the console and in the manifest) instead of refusing"
        parser.add_argument("--skip-bad", action="store_true", help=skip)
    elif command == "search":
        parser.add_argument("--index", required=True, help="the index folder to search")
        queries = parser.add_mutually_exclusive_group(required=True)
        queries.add_argument("--sketch", nargs="+", help="sketch image files")
        queries.add_argument("--sketches", help="a folder of sketch images")
        queries.add_argument("--query-index", help="an index whose items are the queries (same model)")
        parser.add_argument("--k", default="10", help="results per query, or 'all'")
        parser.add_argument("--backend", default=None, help="faiss, jax, numpy or faiss_ivf (default: faiss)")
        parser.add_argument("--representation", default="float", choices=("float", "itq", "hash"))
        parser.add_argument("--json", default=None, help="write the results as JSON here")
        parser.add_argument("--grid", default=None, help="write a picture of the results here (PNG)")
        parser.add_argument("--grid-queries", type=int, default=8, help="queries in the picture")
        parser.add_argument("--grid-k", type=int, default=8, help="results per query in the picture")
        parser.add_argument("--workdir", default=None, help="the run folder, if it moved since indexing")
        parser.add_argument("--show", type=int, default=20, help="queries printed in the table")
    return parser


def _config(args: argparse.Namespace, extra: list[str], parser: argparse.ArgumentParser) -> Any:
    """The config named by ``--config`` with its ``--config.x=y`` overrides; without ``--config``, the run's own
    config (``--workdir``) with the overrides; None when neither is asked for."""
    unknown = [a for a in extra if not a.startswith("--config.")]
    named, workdir = getattr(args, "config", None), getattr(args, "workdir", None)
    if unknown or (extra and named is None and workdir is None):
        parser.error(f"unrecognized arguments: {' '.join(unknown or extra)}")
    if named is None and not extra:
        return None
    from absl import flags
    from ml_collections import config_flags

    values = flags.FlagValues()
    if named is None:  # overrides of the run's own config
        from jsbir.retrieval.encoder import read_run_config

        argv = ["jsbir", *extra]
        run_config = read_run_config(workdir)
        try:
            config_flags.DEFINE_config_dict("config", run_config, flag_values=values, lock_config=True, sys_argv=argv)
            values(argv)
        except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{' '.join(extra)}: not a field of {workdir}'s config, or a bad value ({e})") from e
    else:
        config_flags.DEFINE_config_file("config", None, "Method config file.", flag_values=values, lock_config=True)
        values(["jsbir", f"--config={named}", *extra])
    return values.config


def evaluate(args: argparse.Namespace, config: Any) -> int:
    """Evaluates a run's checkpoint without training; prints the headline metrics, writes the report."""
    from jsbir import runlock
    from jsbir.eval.evaluator import Evaluator
    from jsbir.retrieval import encoder as encoder_lib

    # A report written into the run folder waits for no training writing there (nor another evaluate): refused.
    into_run = args.out is None or os.path.dirname(os.path.abspath(args.out)) == os.path.abspath(args.workdir)
    with runlock.locked(runlock.lock_path(args.workdir), "evaluate", take=into_run):
        return _evaluate(args, config, encoder_lib, Evaluator)


def _evaluate(args: argparse.Namespace, config: Any, encoder_lib: Any, Evaluator: Any) -> int:  # noqa: N803
    encoder = encoder_lib.load_run(args.workdir, config, args.checkpoint)
    data = encoder_lib.prepared_data(encoder.data, encoder.config, encoder.mesh)
    evaluator = Evaluator(encoder.evaluator.method, encoder.model, data, encoder.config, encoder.mesh, args.split)
    extra = {"checkpoint": encoder.checkpoint}
    weight = encoder.checkpoint["fusion_weight"]  # the frozen baseline's share validation chose with a best checkpoint
    report = evaluator.run(
        encoder.state, encoder.workdir, tag="evaluate", write=False, extra=extra, fusion_weight=weight
    )
    from jsbir.writers import write_atomic

    out = args.out or os.path.join(encoder.workdir, f"evaluation_{args.split}.json")
    write_atomic(out, json.dumps(report, indent=1))
    for key in sorted(report["metrics"]):
        if key.startswith(("map@all[exact]", "itq", "hash", "prec@100", "acc@")) and "chance" not in key:
            print(f"{key:<32} {report['metrics'][key]:.4f}")
    print(f"step {report['step']} ({encoder.checkpoint['subdir']}); report: {out}")
    return 0


def _photos(args: argparse.Namespace, size: int) -> tuple[list[str], list[dict[str, str]]]:
    """The --photos files to index, and those --skip-bad leaves out (printed)."""
    from jsbir import retrieval

    paths = retrieval.list_images(args.photos)
    if not args.skip_bad:
        return paths, []
    paths, skipped = retrieval.readable_images(paths, size)
    for item in skipped:
        print(f"skipped {item['path']}: {item['reason']}")
    if not paths:
        raise ValueError(f"none of the {len(skipped)} images in {args.photos} is readable")
    return paths, skipped


def index(args: argparse.Namespace, config: Any) -> int:
    """Writes (or adds to) an index, holding its lock (``jsbir.runlock``) so two writers never race."""
    from jsbir import runlock

    parent_exists = os.path.isdir(os.path.dirname(os.path.abspath(args.out)))
    with runlock.locked(runlock.sibling_lock_path(args.out), "index", take=parent_exists):
        return _index(args, config)


def _index(args: argparse.Namespace, config: Any) -> int:
    from jsbir import retrieval

    if args.add:
        if not args.photos:
            raise ValueError("--add adds --photos to an existing index")
        existing = retrieval.open_index(args.out)
        if args.workdir:
            encoder = retrieval.load_run(args.workdir, config, args.checkpoint)
        else:
            encoder = retrieval.load_encoder(existing)
        paths, skipped = _photos(args, encoder.image_size)
        done = retrieval.add_files(encoder, existing, paths, args.photos, args.batch, skipped)
        print(f"index {done.folder}: {len(done)} items ({len(done) - len(existing)} added, {len(skipped)} skipped)")
        return 0
    if not args.workdir:
        raise ValueError("--workdir (the trained run) is required")
    if os.path.exists(args.out) and not args.overwrite:  # refuse before the model is loaded
        raise FileExistsError(f"{os.path.abspath(args.out)} already exists; choose another --out or pass --overwrite")
    if args.photos:
        retrieval.list_images(args.photos)  # refuse a missing or empty folder before the model is loaded
        encoder = retrieval.load_run(args.workdir, config, args.checkpoint)
        paths, skipped = _photos(args, encoder.image_size)
        done = retrieval.index_files(encoder, paths, args.out, args.photos, args.overwrite, args.batch, args.modality,
                                     skipped)  # fmt: skip
    else:
        encoder = retrieval.load_run(args.workdir, config, args.checkpoint)
        done = retrieval.index_split(encoder, args.split, args.out, args.modality, args.overwrite, args.batch)
    print(f"index {done.folder}: {len(done)} {done.manifest['modality']} images, {done.dim}-d, "
          f"codes {sorted(done.manifest['codes'])}")  # fmt: skip
    return 0


def _unpacked(index: Any, name: str) -> np.ndarray:
    bits = index.code_bits(name)
    return np.where(np.unpackbits(np.asarray(index.codes(name)), axis=1)[:, :bits] > 0, 1, -1).astype(np.int8)


def _queries(args: argparse.Namespace, gallery: Any) -> tuple[np.ndarray, list[str], list[Any], np.ndarray | None]:
    """(queries for the searcher, their names, their pictures, their labels by gallery class id or None)."""
    from jsbir import retrieval

    if args.query_index:
        other = retrieval.open_index(args.query_index)
        retrieval.index.check_same_model(other.manifest["model"], gallery.manifest["model"], f"index {other.folder}")
        if args.representation == "hash":
            queries = _unpacked(other, "hash")
        else:
            queries = np.asarray(other.embeddings)
        lookup = {n: i for i, n in enumerate(gallery.class_names)}
        labels = np.array([lookup.get(other.class_names[c], -2) if c >= 0 else -2 for c in other.labels])
        names = [os.path.relpath(other.image_path(i), other.folder) for i in range(len(other))]
        return queries, names, [other.image_path(i) for i in range(len(other))], labels
    paths = list(args.sketch) if args.sketch else retrieval.list_images(args.sketches)
    encoder = retrieval.load_encoder(gallery, args.workdir)
    images = retrieval.read_images(paths, encoder.image_size)
    embeddings, codes = encoder.encode(images, "sketch")
    if args.representation == "hash" and codes is None:
        raise ValueError(f"method {encoder.method!r} learns no codes of its own: use --representation itq")
    return (codes if args.representation == "hash" else embeddings), paths, list(images), None


def search(args: argparse.Namespace, config: Any) -> int:
    """Searches an index with sketches, or with another index's items; prints, writes JSON and a picture."""
    from jsbir import retrieval
    from jsbir.retrieval import results

    gallery = retrieval.open_index(args.index)
    k = len(gallery) if args.k == "all" else int(args.k)
    queries, names, pictures, labels = _queries(args, gallery)
    searcher = retrieval.get_searcher(gallery, args.backend, args.representation)
    scores, ids = searcher.search(queries, k)
    rows = results.result_rows(gallery, names, scores, ids)
    print(results.table(rows[: args.show]))
    if len(rows) > args.show:
        print(f"... {len(rows) - args.show} more queries (--json has them all)")
    document = {"index": gallery.folder, "backend": searcher.backend_name, "representation": args.representation,
                "k": int(scores.shape[1]), "queries": rows}  # fmt: skip
    if labels is not None and scores.shape[1] == len(gallery) and (labels >= 0).all():
        ks = tuple(gallery.manifest["config"]["eval"]["ks"])
        values = results.ranking_metrics(scores, ids, labels, gallery.labels, ks)
        document["metrics"] = values
        print(f"mAP@all[exact] {values['map@all[exact]']:.4f}  mAP@all[stable] {values['map@all[stable]']:.4f}")
    if args.json:
        results.write_json(args.json, document)
    if args.grid:
        shown = [{**r, "results": r["results"][: args.grid_k]} for r in rows[: args.grid_queries]]
        results.grid(shown, pictures[: args.grid_queries]).save(args.grid)
    return 0


def main(command: str, argv: list[str]) -> int:
    """Runs one subcommand.

    Args:
      command: "evaluate", "index" or "search".
      argv: the arguments after it.

    Returns:
      The exit status: 0, or 2 with a one-line error on stderr (bad input, a refused index or checkpoint).
    """
    from jsbir import checkpoint, runlock

    parser = build_parser(command)
    args, extra = parser.parse_known_args(argv)
    if command == "search" and args.k != "all" and not (args.k.isdigit() and int(args.k) > 0):
        parser.error(f"--k must be a positive integer or 'all', got {args.k!r}")
    try:
        config = _config(args, extra, parser)
        import tensorflow as tf

        tf.config.set_visible_devices([], "GPU")  # TensorFlow only decodes; JAX owns accelerators.
        return {"evaluate": evaluate, "index": index, "search": search}[command](args, config)
    except (FileNotFoundError, FileExistsError, ValueError, checkpoint.CheckpointError, runlock.FolderLockedError) as e:
        print(f"jsbir {command}: error: {e}", file=sys.stderr)
        return 2
