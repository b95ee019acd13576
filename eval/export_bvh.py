"""Export motions to BVH files (the dataset's skeleton, metres, Y up) for Blender or any BVH viewer.

    # first 4 motions of a split (new_joints, or new_joint_vecs decoded), one <id>.bvh each
    python -m eval.export_bvh --dataset-root dataset/HumanML3D --split test --num 4 --out runs/bvh/test
    # feature files (T, D) (de-normalised, like eval.render takes them) or joints files (T, J, 3):
    # a VQ reconstruction, a generated motion (eval.generate writes round<r>.bvh itself)
    python -m eval.export_bvh --npy runs/vq_recon/000012_recon.npy --out runs/bvh/recon

Each motion becomes ``<out>/<id or file stem>.bvh`` (see ``data.bvh_export`` for the skeleton and
the inverse kinematics); ``<out>/export.json`` lists, per file, the frames and the largest and mean
distance (metres) between an input joint and the BVH's joint. Motions with rigid bones come out
exact to 1e-6 m; decoded motions whose bone lengths drift are off by up to a few centimetres unless
``--joint-positions`` (a position channel on every joint) is given.

``<out>`` is a run folder (``run.json``, ``config.yaml``): a folder holding files of another
command or of no run is refused unless ``--overwrite`` (which still replaces only the files this
command writes), and a new export into the same folder replaces the earlier export's files.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from data.bvh_export import motion_to_bvh
from data.layout import DatasetPaths, load_npy, read_split
from data.runtime import open_run
from data.specs import DATASET_NAMES, get_dataset_spec
from eval.render import load_dataset_motion, to_joints

logger = logging.getLogger("eval.export_bvh")

COMMAND = "eval.export_bvh"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m eval.export_bvh", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)  # fmt: skip
    p.add_argument("--out", required=True, help="run folder for the .bvh files")
    p.add_argument("--dataset", default="humanml3d", help=f"dataset spec ({', '.join(DATASET_NAMES)})")
    p.add_argument("--npy", nargs="+", type=Path, help="joints (T,J,3) or de-normalised features (T,D) files")
    p.add_argument("--dataset-root", type=Path, help="folder in the HumanML3D layout")
    p.add_argument("--split", default="test", help="split whose first motions are exported")
    p.add_argument("--num", type=int, default=4, help="how many motions of the split")
    p.add_argument("--ids", nargs="+", help="export these ids instead of the split's first --num")
    p.add_argument("--source", choices=("auto", "joints", "vecs"), default="auto",
                   help="new_joints (auto: when present) or new_joint_vecs decoded with recover_from_ric")  # fmt: skip
    p.add_argument("--joint-positions", action="store_true",
                   help="a position channel on every joint: exact joints even when bone lengths drift")  # fmt: skip
    p.add_argument("--overwrite", action="store_true", help="write into a folder another command owns")
    return p


def collect_motions(args: argparse.Namespace) -> tuple[dict[str, object], dict[str, Path]]:
    """``{name: motion}`` to export (joints or features, validated later) and the input files."""
    spec = get_dataset_spec(args.dataset)
    if args.npy and args.dataset_root is not None:
        raise SystemExit("use either --npy or --dataset-root, not both")
    if args.npy:
        stems = [p.stem for p in args.npy]
        doubles = sorted({s for s in stems if stems.count(s) > 1})
        if doubles:
            raise SystemExit(f"--npy: several files named {doubles}; their .bvh files would collide")
        motions = {p.stem: load_npy(p, "motion file") for p in args.npy}
        return motions, {f"npy:{p.stem}": p for p in args.npy}
    if args.dataset_root is not None:
        paths = DatasetPaths(args.dataset_root)
        ids = args.ids or read_split(args.dataset_root, args.split)[: args.num]
        motions = {i: load_dataset_motion(paths, i, spec, args.source) for i in ids}
        return motions, {"dataset_root": args.dataset_root}
    raise SystemExit("give --dataset-root (export a split) or --npy FILE [FILE ...]")


def main(argv: list[str] | None = None) -> list[Path]:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    spec = get_dataset_spec(args.dataset)
    motions, inputs = collect_motions(args)
    joints = {}
    for name, motion in motions.items():
        try:
            joints[name] = to_joints(motion, spec)
        except ValueError as err:
            raise SystemExit(f"{name}: {err}") from err
    config = {k: [str(p) for p in v] if k == "npy" and v else str(v) if isinstance(v, Path) else v
              for k, v in vars(args).items()}  # fmt: skip
    written, summary = [], []
    with open_run(args.out, command=COMMAND, config=config, seed=0, inputs=inputs,
                  volatile=("out", "overwrite"), overwrite=args.overwrite, resume=False,
                  fixes={"overwrite": "pass --overwrite", "out": "choose another --out"}) as run:  # fmt: skip
        for name, motion in joints.items():
            export = motion_to_bvh(motion, spec, joint_positions=args.joint_positions)
            written.append(run.write_text(f"{name}.bvh", export.text))
            summary.append({"file": f"{name}.bvh", "frames": export.frames, "frame_time": export.frame_time,
                            "max_error_m": export.max_error, "mean_error_m": export.mean_error})  # fmt: skip
            logger.info("%s: %d frames, joint error max %.2e m, mean %.2e m",
                        written[-1], export.frames, export.max_error, export.mean_error)  # fmt: skip
        run.write_json("export.json", {"dataset": spec.name, "joint_positions": args.joint_positions,
                                       "units": "metres", "files": summary})  # fmt: skip
        run.done()
    return written


if __name__ == "__main__":
    main()
