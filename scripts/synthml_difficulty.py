"""Measure SynthML's difficulty targets (shared/spec/synthml.md) with a trained evaluator.

Prints, from the test split:
- how much it overlaps training (``data.synth.splits.split_overlap``): the share of its motions
  whose program equals a training program, of its caption lines that occur word for word among the
  training caption lines, and of its motions with a value no training program has (no evaluator
  needed: without ``--evaluator`` only these are printed; works on builds of any generator version);
- diversity of all ground-truth motions vs the diversity within each action family (first action);
- ground-truth multimodality: the same program re-rendered with other subjects and style seeds
  (one caption fits many motions), embedded and scored with ``eval.metrics.multimodality``.

    python -m scripts.synthml_difficulty --dataset-root runs/demo/SynthML \
        [--evaluator runs/demo/evaluator] [--programs 60] [--renders 12] [--seed 0]
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from data.layout import DatasetPaths, load_features, read_split
from data.motion_repr import joints_to_features
from data.normalization import FeatureNorm
from data.specs import get_dataset_spec
from data.synth.body import Subject, sample_subject
from data.synth.program import MotionProgram
from data.synth.render import render_program
from data.synth.splits import split_overlap
from data.synth.writer import read_attributes
from eval.metrics import diversity, multimodality
from models.evaluator import check_evaluator_provenance, load_guo_evaluator


def embed(evaluator, norm: FeatureNorm, feats: list[np.ndarray], max_len: int, unit: int) -> np.ndarray:
    """Embed raw ``(T_i, D)`` features cropped to a multiple of ``unit`` (at most ``max_len``)."""
    lengths = [min(len(f), max_len) // unit * unit for f in feats]
    batch = np.zeros((len(feats), max_len, feats[0].shape[1]), np.float32)
    for i, (f, n) in enumerate(zip(feats, lengths, strict=True)):
        batch[i, :n] = norm.normalise(f[:n])
    out = evaluator.embed_motion(torch.from_numpy(batch), torch.tensor(lengths, dtype=torch.long))
    return out.numpy()


def format_overlap(split: str, fig: dict) -> str:
    """One line of ``split_overlap`` figures, e.g. for the test split."""
    c = fig["counts"]
    return (
        f"{split} vs train: programs in train {100 * fig['programs_in_train']:.1f}% "
        f"({c['programs']}/{fig['motions']}), captions in train {100 * fig['captions_in_train']:.1f}% "
        f"({c['captions']}/{fig['captions']}), programs or sub-clip windows in train "
        f"{100 * fig['windows_in_train']:.1f}% ({c['windows']}/{fig['windows']}), motions with a value "
        f"unseen in train {100 * fig['unseen_values']:.1f}% ({c['unseen_values']}/{fig['motions']})"
    )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset-root", required=True)
    ap.add_argument("--evaluator", default=None, help="folder with finest.tar and meta/ (omit: overlap only)")
    ap.add_argument("--dataset", default="humanml3d")
    ap.add_argument("--split", default="test")
    ap.add_argument("--programs", type=int, default=60)
    ap.add_argument("--renders", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.split != "train":
        print(format_overlap(args.split, split_overlap(args.dataset_root, args.split)))
    if args.evaluator is None:
        return
    torch.set_num_threads(1)
    spec = get_dataset_spec(args.dataset)
    paths = DatasetPaths(args.dataset_root)
    evaluator = load_guo_evaluator(Path(args.evaluator) / "finest.tar", dataset=spec)
    norm = FeatureNorm.load_meta(Path(args.evaluator) / "meta", spec)
    # motions only (no captions): the meta is what must match the evaluator's record
    check_evaluator_provenance(Path(args.evaluator) / "finest.tar", meta_dir=Path(args.evaluator) / "meta")
    unit, max_len = spec.unit_length, spec.max_motion_len

    ids = read_split(args.dataset_root, args.split)
    feats = [load_features(paths.vec_file(i), spec) for i in ids]
    emb = np.concatenate(
        [embed(evaluator, norm, feats[k : k + 64], max_len, unit) for k in range(0, len(feats), 64)]
    )
    families = [read_attributes(args.dataset_root, i)["program"]["actions"][0]["family"] for i in ids]
    by_family: dict[str, list[int]] = defaultdict(list)
    for k, fam in enumerate(families):
        by_family[fam].append(k)
    times = min(300, len(ids) - 1)
    print(
        f"ground truth ({args.split}, {len(ids)} motions): diversity {diversity(emb, times=times, seed=args.seed):.3f}"
    )
    for fam, rows in sorted(by_family.items()):
        if len(rows) > 10:
            d = diversity(emb[rows], times=len(rows) - 1, seed=args.seed)
            print(f"  within family {fam:<14} ({len(rows):3d} motions): diversity {d:.3f}")

    rng = np.random.default_rng(args.seed)
    picks = rng.choice(len(ids), size=min(args.programs, len(ids)), replace=False)
    mm_emb = []
    for k in picks:
        attrs = read_attributes(args.dataset_root, ids[k])
        program = MotionProgram.from_dict(attrs["program"])
        renders = []
        for r in range(args.renders):
            sub_rng = np.random.default_rng([args.seed, int(k), r])
            subject = Subject.from_dict(attrs["subject"]) if r == 0 else sample_subject(sub_rng)
            style = attrs["style_seed"] if r == 0 else int(sub_rng.integers(2**31))
            joints = render_program(program, subject, style, spec.name)
            renders.append(joints_to_features(joints, spec, continuous_yaw=True))
        mm_emb.append(embed(evaluator, norm, renders, max_len, unit))
    mm = multimodality(np.stack(mm_emb), times=10, seed=args.seed)
    print(f"ground-truth multimodality ({len(picks)} programs x {args.renders} renders): {mm:.3f}")


if __name__ == "__main__":
    main()
