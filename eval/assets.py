"""Checks that downloaded or hand-placed evaluation assets are complete and the right shape.

Used by ``prepare/download_*.sh`` (through ``python -m prepare.verify_assets``) and by tests. Each
check returns a short summary string and raises ``AssetError`` naming the missing or bad file and
where it should come from. Expected tree (spec section 7; every path is configurable elsewhere)::

    glove/our_vab_data.npy  our_vab_words.pkl  our_vab_idx.pkl
    checkpoints/<t2m|kit>/text_mot_match/model/finest.tar
    checkpoints/<t2m|kit>/Comp_v6_KLD005/meta/{mean,std}.npy      (evaluator normalisation)
    checkpoints/<t2m|kit>/VQVAEV3_CB1024_CMT_H1024_NRES3/meta/{mean,std}.npy   (VQ normalisation)
    dataset/<HumanML3D|KIT-ML>/...                                 (spec section 1.7)
"""

from __future__ import annotations

from pathlib import Path

from data.layout import DatasetFileError, DatasetPaths, read_split
from data.normalization import FeatureNorm
from data.specs import DatasetSpec, get_dataset_spec
from data.word_vectorizer import WordVectorFileError, WordVectorizer
from models.evaluator import EvaluatorLoadError, load_guo_evaluator

EVAL_META_DIR = "Comp_v6_KLD005"
"""Folder whose ``meta/`` holds the evaluator mean/std in the released tree."""
VQ_META_DIR = "VQVAEV3_CB1024_CMT_H1024_NRES3"
"""Folder whose ``meta/`` holds the VQ-VAE mean/std in the released tree."""


class AssetError(FileNotFoundError):
    """An evaluation asset is missing or malformed; the message says where it comes from."""


def released_evaluator_paths(checkpoints_dir: str | Path, dataset: str | DatasetSpec) -> dict[str, Path]:
    """Paths of the released evaluator files for ``dataset`` under ``checkpoints_dir``."""
    spec = get_dataset_spec(dataset)
    base = Path(checkpoints_dir) / spec.eval_dir_name
    return {
        "checkpoint": base / "text_mot_match" / "model" / "finest.tar",
        "eval_meta": base / EVAL_META_DIR / "meta",
        "vq_meta": base / VQ_META_DIR / "meta",
    }


def verify_glove(glove_dir: str | Path, prefix: str = "our_vab") -> str:
    """Load the ``our_vab`` files with the restricted reader; check sos/eos/unk and 300-d rows."""
    try:
        vec = WordVectorizer(glove_dir, prefix=prefix)
    except WordVectorFileError as err:
        raise AssetError(
            f"{err}\nPlace the released GloVe files in {glove_dir}/ (bash prepare/download_glove.sh) or build "
            "them with python -m prepare.build_word_vectors"
        ) from err
    return f"glove: {len(vec)} words x {vec.dim} dims in {glove_dir}"


def verify_evaluator_tree(checkpoints_dir: str | Path, dataset: str | DatasetSpec) -> str:
    """Strictly load ``finest.tar`` and check both meta folders hold ``(D,)`` mean/std files."""
    spec = get_dataset_spec(dataset)
    paths = released_evaluator_paths(checkpoints_dir, spec)
    try:
        ev = load_guo_evaluator(paths["checkpoint"], spec)
        for key in ("eval_meta", "vq_meta"):
            FeatureNorm.load_meta(paths[key], spec)
    except (EvaluatorLoadError, DatasetFileError) as err:
        raise AssetError(
            f"{err}\nExpected the released {spec.name} evaluator under {checkpoints_dir}/{spec.eval_dir_name}/ "
            "(bash prepare/download_extractor.sh)"
        ) from err
    return f"evaluator {spec.name}: {paths['checkpoint']} (epoch {ev.epoch}), meta files OK"


def verify_dataset(root: str | Path, dataset: str | DatasetSpec) -> str:
    """Check the HumanML3D layout: split files, and that every test id has features and captions."""
    spec = get_dataset_spec(dataset)
    paths = DatasetPaths(root)
    try:
        ids = read_split(root, "test")
        for sub in (paths.vecs_dir, paths.texts_dir):
            if not sub.is_dir():
                raise DatasetFileError(f"folder not found: {sub}")
        missing = [i for i in ids if not paths.vec_file(i).is_file() or not paths.text_file(i).is_file()]
        for f in (paths.mean_file, paths.std_file):
            if not f.is_file():
                raise DatasetFileError(f"normalisation file not found: {f}")
    except DatasetFileError as err:
        raise AssetError(f"{err}\nSee prepare/download_datasets.sh for how to obtain {spec.name}") from err
    if missing:
        raise AssetError(
            f"{root}: {len(missing)} of {len(ids)} test ids lack new_joint_vecs/ or texts/ files (e.g. "
            f"{missing[:3]})"
        )
    return f"dataset {spec.name}: {root} ({len(ids)} test ids)"
