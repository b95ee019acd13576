"""Read annotation files, build every example, print counts and one rendered example per file.

Usage::

    python -m prepare.inspect_annotations --dataset-root DIR --vq-checkpoint FILE A.json [B.json ...]
    python -m prepare.inspect_annotations --dataset-root DIR --codes-dir CODES A.json ...
    python -m prepare.inspect_annotations --dataset-root DIR --codes-dir CODES --annotations-dir ENGINE_OUT

Reads the annotation files, the motions they name (``--dataset-root`` and ``--extra-root``) through
their codes (a VQ checkpoint, or the code files of ``prepare.tokenize_motions``), and optionally
the original ``prompt_template-2.json`` (sha256-checked); writes nothing. See
``data.inspect_annotations`` for what is built. Exit status: 0 when every file is well formed
(missing motion files are reported, all of them and counted, and do not fail the run unless
``--fail-on-missing``), 1 on a malformed file or bad input (the message names the file, the entry id
and the field) or on provenance that does not hold (``--codes-dir``: a motion changed after it was
tokenised, or a code file not in ``codes_index.json``, see ``data.motion_codes.CodesDirSource``;
``--annotations-dir`` of a data-engine output: its imperfect motions were re-rendered since, see
``data.engine.run.check_imperfect_motions``), 3 with ``--fail-on-missing`` when motions are missing.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections import Counter

from data.annotations import AnnotationError, MotionResolver, read_annotation_file
from data.engine.run import check_imperfect_motions
from data.inspect_annotations import InspectConfig, inspect_file, missing_summary_lines
from data.motion_codes import CodesDirSource
from data.normalization import FeatureNorm
from data.prompts import ORIGINAL_TEMPLATE_SHA256
from data.run_folder import ProvenanceError
from data.sft_examples import CodeLookup
from data.specs import get_dataset_spec
from models.vq_tokenize import VQCodeSource
from models.vqvae import MotionVQVAE


def parse_args(argv: list[str] | None = None) -> InspectConfig:
    """The command line as an ``InspectConfig`` (argparse errors exit 2)."""
    parser = argparse.ArgumentParser(
        prog="python -m prepare.inspect_annotations",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("files", nargs="*", help="annotation JSON files")
    parser.add_argument(
        "--annotations-dir", default="", help="also read every annotation file under this folder"
    )
    parser.add_argument("--dataset-root", required=True, help="motion root in the HumanML3D layout")
    parser.add_argument("--extra-root", action="append", default=[], help="more motion roots, searched after")
    parser.add_argument("--dataset", default="humanml3d", help="dataset spec name (humanml3d, kit)")
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--vq-checkpoint", default="", help="VQ-VAE checkpoint ({'net': state_dict})")
    src.add_argument(
        "--codes-dir", default="", help="folder of <id>.npy code files (prepare.tokenize_motions)"
    )
    parser.add_argument(
        "--vq-mean", default="", help="VQ mean.npy (default: <ckpt dir>/meta/mean.npy, else dataset Mean.npy)"
    )
    parser.add_argument(
        "--vq-std", default="", help="VQ std.npy (default: <ckpt dir>/meta/std.npy, else dataset Std.npy)"
    )
    parser.add_argument(
        "--prompt-template", default="", help="original prompt_template-2.json (sha256-checked)"
    )
    parser.add_argument(
        "--prompt-template-sha256",
        default=ORIGINAL_TEMPLATE_SHA256,
        help="expected sha256 of --prompt-template (default: the released file's; 'none' skips the check)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--with-answer", action="store_true", help="stage 2: keep the <answer> block")
    parser.add_argument("--fail-on-missing", action="store_true", help="exit 3 when motion files are missing")
    args = parser.parse_args(argv)
    if not args.files and not args.annotations_dir:
        parser.error("no annotation files given (pass FILE... or --annotations-dir)")
    sha = args.prompt_template_sha256
    return InspectConfig(
        dataset_root=args.dataset_root,
        files=list(args.files),
        annotations_dir=args.annotations_dir,
        extra_roots=list(args.extra_root),
        dataset=args.dataset,
        vq_checkpoint=args.vq_checkpoint,
        codes_dir=args.codes_dir,
        vq_mean=args.vq_mean,
        vq_std=args.vq_std,
        prompt_template=args.prompt_template,
        prompt_template_sha256=None if sha.lower() in ("", "none", "null") else sha,
        seed=args.seed,
        with_answer=args.with_answer,
        fail_on_missing=args.fail_on_missing,
    )


def code_source(cfg: InspectConfig, resolver: MotionResolver) -> CodeLookup:
    """The code files of ``codes_dir``, else the VQ checkpoint encoding each motion on demand."""
    if cfg.codes_dir:
        return CodesDirSource(cfg.codes_dir, resolver)
    spec = get_dataset_spec(cfg.dataset)
    vq = MotionVQVAE.from_checkpoint(cfg.vq_checkpoint, nfeats=spec.feat_dim)
    # as prepare.tokenize_motions: the checkpoint's meta/ folder; unlike it, a missing meta file
    # falls back (logged) to the dataset's Mean/Std, since inspection is only a preview
    norm = FeatureNorm.resolve(
        spec, cfg.vq_mean, cfg.vq_std, checkpoint=cfg.vq_checkpoint, dataset_root=cfg.dataset_root
    )
    return VQCodeSource(resolver, vq, norm)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg = parse_args(argv)
        pools = cfg.prompt_pools()
        resolver = MotionResolver([cfg.dataset_root, *cfg.extra_roots], dataset=cfg.dataset)
        codes = code_source(cfg, resolver)
        if cfg.annotations_dir:
            check_imperfect_motions(cfg.annotations_dir)  # an engine output: its motions are still its own
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    all_missing: Counter = Counter()
    t0 = time.perf_counter()
    for path in cfg.annotation_files():
        try:
            report = inspect_file(read_annotation_file(path), codes, pools, cfg.seed, cfg.build_options())
        except (AnnotationError, ProvenanceError) as err:  # a malformed file, or codes of other motions
            print(f"error: {err}", file=sys.stderr)
            return 1
        all_missing.update(report.missing)
        print("\n".join(report.summary_lines()))
    print(f"built in {time.perf_counter() - t0:.1f}s")
    if isinstance(codes, CodesDirSource) and codes.unchecked:
        print(
            f"{len(codes.unchecked)} code files not checked against their motion (no motion file to compare)"
        )
    missing = missing_summary_lines(all_missing)
    if missing:
        print("\n".join(missing))
        if cfg.fail_on_missing:
            return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
