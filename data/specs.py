"""Every per-dataset fact lives here, in one ``DatasetSpec`` registry.

No other module writes ``22``/``263``/``20`` or branches on a dataset name: they call
``get_dataset_spec(name)`` and read fields. Values follow the published HumanML3D / KIT-ML
processing (see ``shared/spec/motion-vq-evaluation.md`` section 1.2).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

POS_TAGS: tuple[str, ...] = (
    "VERB", "NOUN", "DET", "ADP", "NUM", "AUX", "PRON", "ADJ", "ADV",
    "Loc_VIP", "Body_VIP", "Obj_VIP", "Act_VIP", "Desc_VIP", "OTHER",
)  # fmt: skip
"""The 15 POS one-hot slots of the Guo evaluator's word vectorizer (index = one-hot position)."""


@dataclass(frozen=True)
class DatasetSpec:
    """Facts about one motion dataset in the HumanML3D layout."""

    name: str
    """Canonical registry name (``humanml3d`` or ``kit``)."""
    joints_num: int
    """Number of skeleton joints J."""
    feat_dim: int
    """Feature dimension D = 4 + (J-1)*9 + J*3 + 4."""
    fps: float
    """Frames per second of the processed data; used for ``from``/``to`` caption cuts."""
    kinematic_chain: tuple[tuple[int, ...], ...]
    """Chains of joint indices from the root outwards; defines the parents."""
    raw_offsets: tuple[tuple[float, float, float], ...]
    """Unit rest-pose bone direction per (child) joint."""
    target_bone_lengths: tuple[float, ...]
    """Default target skeleton: bone length of joints 1..J-1 to their parent (dataset units)."""
    face_joint_indx: tuple[int, int, int, int]
    """(r_hip, l_hip, r_shoulder, l_shoulder) used to find the facing direction."""
    fid_l: tuple[int, int]
    """Left foot joints (ankle, toe) for contacts."""
    fid_r: tuple[int, int]
    """Right foot joints (ankle, toe) for contacts."""
    l_idx: tuple[int, int]
    """Leg joints whose offsets give the retargeting scale ratio."""
    feet_threshold: float
    """Squared per-frame foot displacement below which a contact is set."""
    min_motion_len: int
    """Loaders keep clips with ``min_motion_len <= T < max_clip_len``."""
    max_clip_len: int = 200
    """Exclusive upper bound on clip length kept by loaders."""
    max_motion_len: int = 196
    """Longest motion after cropping (frames)."""
    unit_length: int = 4
    """Frames per VQ code / per movement-encoder step."""
    max_text_len: int = 20
    """Caption tokens kept by the evaluation dataset (plus sos/eos)."""
    eval_dir_name: str = ""
    """Folder name of the released evaluator checkpoints (``t2m`` / ``kit``)."""
    id_digits: int = 6
    """Zero-padded width of motion ids."""
    plot_radius: float = 4.0
    """Half-width of the rendering box (dataset units)."""
    metres_per_unit: float = 1.0
    """Scale from dataset units to metres (KIT-ML is in millimetres)."""
    aliases: tuple[str, ...] = field(default=())
    """Other accepted names."""
    joint_names: tuple[str, ...] = field(default=())
    """Name of each joint (BVH export); empty means ``joint_<index>``."""

    @property
    def parents(self) -> np.ndarray:
        """(J,) parent index per joint, -1 for the root."""
        parents = np.full(self.joints_num, -1, dtype=np.int64)
        for chain in self.kinematic_chain:
            for prev, cur in zip(chain[:-1], chain[1:], strict=True):
                parents[cur] = prev
        return parents

    @property
    def raw_offsets_array(self) -> np.ndarray:
        """(J, 3) unit bone directions."""
        return np.asarray(self.raw_offsets, dtype=np.float64)

    @property
    def target_offsets(self) -> np.ndarray:
        """(J, 3) default target skeleton offsets = raw direction x bone length."""
        lengths = np.concatenate([[0.0], np.asarray(self.target_bone_lengths, dtype=np.float64)])
        return self.raw_offsets_array * lengths[:, None]

    @property
    def feature_slices(self) -> dict[str, slice]:
        """Blocks of the feature vector (half-open ranges), in layout order."""
        j = self.joints_num
        bounds = {
            "root_rot_velocity": 1,
            "root_linear_velocity": 2,
            "root_y": 1,
            "ric": (j - 1) * 3,
            "rot": (j - 1) * 6,
            "local_velocity": j * 3,
            "foot_contact": 4,
        }
        out, start = {}, 0
        for key, size in bounds.items():
            out[key] = slice(start, start + size)
            start += size
        assert start == self.feat_dim, (self.name, start, self.feat_dim)
        return out


_HUMANML3D = DatasetSpec(
    name="humanml3d",
    joints_num=22,
    feat_dim=263,
    fps=20.0,
    kinematic_chain=((0, 2, 5, 8, 11), (0, 1, 4, 7, 10), (0, 3, 6, 9, 12, 15),
                     (9, 14, 17, 19, 21), (9, 13, 16, 18, 20)),
    raw_offsets=((0, 0, 0), (1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, -1, 0), (0, 1, 0),
                 (0, -1, 0), (0, -1, 0), (0, 1, 0), (0, 0, 1), (0, 0, 1), (0, 1, 0), (1, 0, 0),
                 (-1, 0, 0), (0, 0, 1), (0, -1, 0), (0, -1, 0), (0, -1, 0), (0, -1, 0), (0, -1, 0),
                 (0, -1, 0)),
    target_bone_lengths=(0.1031, 0.1099, 0.1316, 0.3936, 0.3902, 0.1432, 0.4324, 0.4256, 0.0574,
                         0.1434, 0.1494, 0.2194, 0.1375, 0.1434, 0.1030, 0.1316, 0.1230, 0.2568,
                         0.2631, 0.2660, 0.2699),
    face_joint_indx=(2, 1, 17, 16),
    fid_l=(7, 10),
    fid_r=(8, 11),
    l_idx=(5, 8),
    feet_threshold=0.002,
    min_motion_len=40,
    eval_dir_name="t2m",
    id_digits=6,
    plot_radius=4.0,
    metres_per_unit=1.0,
    aliases=("t2m", "humanml", "HumanML3D"),
    # SMPL's first 22 joints (left is +x in the rest pose).
    joint_names=("pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2",
                 "left_ankle", "right_ankle", "spine3", "left_foot", "right_foot", "neck",
                 "left_collar", "right_collar", "head", "left_shoulder", "right_shoulder",
                 "left_elbow", "right_elbow", "left_wrist", "right_wrist"),
)  # fmt: skip

# KIT-ML coordinates are millimetres. The published target skeleton is clip 03950; these default
# bone lengths are a plausible adult in that skeleton's layout, used when no target pose is given.
_KIT = DatasetSpec(
    name="kit",
    joints_num=21,
    feat_dim=251,
    fps=12.5,
    kinematic_chain=((0, 11, 12, 13, 14, 15), (0, 16, 17, 18, 19, 20), (0, 1, 2, 3, 4),
                     (3, 5, 6, 7), (3, 8, 9, 10)),
    raw_offsets=((0, 0, 0), (0, 1, 0), (0, 1, 0), (0, 1, 0), (0, 1, 0), (1, 0, 0), (0, -1, 0),
                 (0, -1, 0), (-1, 0, 0), (0, -1, 0), (0, -1, 0), (1, 0, 0), (0, -1, 0), (0, -1, 0),
                 (0, 0, 1), (0, 0, 1), (-1, 0, 0), (0, -1, 0), (0, -1, 0), (0, 0, 1), (0, 0, 1)),
    target_bone_lengths=(110.0, 150.0, 180.0, 200.0, 190.0, 280.0, 250.0, 190.0, 280.0, 250.0,
                         90.0, 420.0, 410.0, 90.0, 60.0, 90.0, 420.0, 410.0, 90.0, 60.0),
    face_joint_indx=(11, 16, 5, 8),
    fid_l=(19, 20),
    fid_r=(14, 15),
    l_idx=(17, 18),
    feet_threshold=0.05,
    min_motion_len=24,
    eval_dir_name="kit",
    id_digits=5,
    plot_radius=240.0 * 8,
    metres_per_unit=0.001,
    aliases=("kit-ml", "kit_ml", "KIT-ML", "KIT"),
    # Descriptive names (the KIT-ML files name no joints); sides follow face_joint_indx, fid_l, fid_r.
    joint_names=("root", "spine_lower", "spine_upper", "neck", "head", "right_shoulder",
                 "right_elbow", "right_wrist", "left_shoulder", "left_elbow", "left_wrist",
                 "right_hip", "right_knee", "right_ankle", "right_ball", "right_toe", "left_hip",
                 "left_knee", "left_ankle", "left_ball", "left_toe"),
)  # fmt: skip

_REGISTRY: dict[str, DatasetSpec] = {}
for _spec in (_HUMANML3D, _KIT):
    for _name in (_spec.name, *_spec.aliases):
        _REGISTRY[_name.lower()] = _spec

DATASET_NAMES: tuple[str, ...] = (_HUMANML3D.name, _KIT.name)


def get_dataset_spec(name: str | DatasetSpec) -> DatasetSpec:
    """Return the spec registered under ``name`` (case-insensitive; aliases such as ``t2m``)."""
    if isinstance(name, DatasetSpec):
        return name
    spec = _REGISTRY.get(str(name).lower())
    if spec is None:
        known = ", ".join(sorted({*DATASET_NAMES, *(a for s in (_HUMANML3D, _KIT) for a in s.aliases)}))
        raise KeyError(f"unknown dataset {name!r}; known names: {known}")
    return spec
