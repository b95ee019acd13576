"""KIT-ML specifics: foot-contact threshold, features <-> joints on a KIT SynthML build, 12.5 fps cuts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from data.datasets import build_clip_index
from data.layout import DatasetPaths, load_features, load_joints, read_split
from data.motion_fixtures import rest_pose
from data.motion_repr import canonicalize_joints, joints_to_features, recover_from_ric
from data.specs import get_dataset_spec
from data.synth.build import build_synthml, make_motion
from data.synth.writer import read_attributes
from tests.conftest import write_tiny_dataset

KIT = get_dataset_spec("kit")
HML = get_dataset_spec("humanml3d")


def test_kit_contact_threshold_is_the_published_value():
    """KIT uses 0.05 squared millimetres per frame (HumanML3D: 0.002 m^2), by default."""
    assert KIT.feet_threshold == 0.05 and HML.feet_threshold == 0.002
    contact = KIT.feature_slices["foot_contact"]
    pose = rest_pose(KIT.target_offsets, KIT)  # target skeleton: retargeting keeps displacements
    t = 12
    # The whole body slides along X: sqrt(0.04) mm per frame for 5 steps, then sqrt(0.06) mm.
    step = np.where(np.arange(t - 1) < 5, np.sqrt(0.04), np.sqrt(0.06))
    joints = np.repeat(pose[None], t, axis=0)
    joints[:, :, 0] += np.concatenate([[0.0], np.cumsum(step)])[:, None]
    feats = joints_to_features(joints, "kit")
    np.testing.assert_array_equal(feats[:5, contact], 1.0)  # 0.04 < 0.05
    np.testing.assert_array_equal(feats[5:, contact], 0.0)  # 0.06 >= 0.05
    # With the HumanML3D value every frame would be a non-contact: the dataset's value is used.
    hml_thr = joints_to_features(joints, "kit", feet_threshold=HML.feet_threshold)[:, contact]
    np.testing.assert_array_equal(hml_thr, 0.0)


@pytest.fixture(scope="module")
def kit_synthml(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("kit_synthml")
    build_synthml(root, dataset="kit", num=20, seed=5, workers=1, progress=False)
    return root


def test_kit_synthml_features_recover_the_canonical_joints(kit_synthml: Path):
    """recover_from_ric(stored features) = canonicalised re-rendered joints (mm, KIT skeleton)."""
    paths = DatasetPaths(kit_synthml)
    ids = read_split(kit_synthml, "all")
    assert len(ids) == 20
    for motion_id in ids[:6]:
        attrs = read_attributes(kit_synthml, motion_id)
        raw = make_motion(attrs["seed"], attrs["index"], "kit")["joints"]  # rendered again, not read
        canon = canonicalize_joints(raw, "kit")
        feats = load_features(paths.vec_file(motion_id), KIT)
        assert feats.shape == (len(raw) - 1, KIT.feat_dim)
        rec = recover_from_ric(feats, KIT.joints_num)
        # float32 features of millimetre positions: 0.1 mm (1e-4 m) absolute.
        np.testing.assert_allclose(rec, canon[:-1], atol=0.1, err_msg=motion_id)
        np.testing.assert_allclose(load_joints(paths.joint_file(motion_id), KIT), canon[:-1], atol=0.1)
        # The stored contacts follow the KIT threshold on the canonical joints.
        feet = list(KIT.fid_l) + list(KIT.fid_r)
        disp = np.square(np.diff(canon[:, feet].astype(np.float64), axis=0)).sum(-1)
        margin = np.abs(disp - KIT.feet_threshold) > 1e-3  # skip frames within rounding of the edge
        np.testing.assert_array_equal(
            feats[..., KIT.feature_slices["foot_contact"]][margin], (disp < KIT.feet_threshold)[margin]
        )
        assert 600 < canon[:, 0, 1].mean() < 1400  # pelvis height in millimetres


def test_kit_caption_windows_are_cut_at_12_5_fps(tmp_path: Path):
    clips = {
        "00001": (100, ["a person walks.#a/DET person/NOUN walk/VERB#0.0#0.0",
                        # 12.5 fps: [int(6.25), int(37.5)) = [6, 37); 20 fps would give [10, 60)
                        "a man jumps.#a/DET man/NOUN jump/VERB#0.5#3.0",
                        # [int(16.25), int(51.25)) = [16, 51)
                        "a man kicks.#a/DET man/NOUN kick/VERB#1.3#4.1",
                        # [0, int(18.75)) = 18 frames < 24: filtered (20 fps: 30 frames, kept)
                        "a man stands.#a/DET man/NOUN stand/VERB#0.0#1.5"]),
    }  # fmt: skip
    root = write_tiny_dataset(tmp_path / "kit", clips=clips, dataset="kit")
    index = build_clip_index(root, "all", "kit", progress=False)
    windows = sorted((e.start, e.end) for e in index.entries if e.name != "00001")
    assert windows == [(6, 37), (16, 51)]
    assert index.stats["subclips_filtered"] == 1
    full = np.load(root / "new_joint_vecs" / "00001.npy")
    for i, entry in enumerate(index.entries):
        np.testing.assert_array_equal(index.motion(i), full[entry.start : entry.end])
