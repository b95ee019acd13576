"""Body model of the SynthML generator: subjects, rest geometry, forward/inverse kinematics.

The generator works in metres, Y up, facing +Z, left = +X (the HumanML3D convention) on the
HumanML3D 22-joint tree (``data.specs``). A ``Subject`` fixes the bone lengths of one person; every
pose the renderer produces keeps those lengths exactly, because limbs are placed with analytic
two-bone IK (positions on circles of fixed radius) and the torso with rotation matrices.

Torso rotations are only applied at the pelvis (0), spine1 (3), spine2 (6) and neck (12); spine3 (9)
and the collars (13, 14) are rigid with spine2. That keeps every KIT-ML bone (which spans several
HumanML3D bones, see ``to_kit``) at a constant length too.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from data.specs import DatasetSpec, get_dataset_spec

HML = get_dataset_spec("humanml3d")

# Joint indices of the HumanML3D tree used by the generator (names from spec section 1.2).
PELVIS, L_HIP, R_HIP, SPINE1, L_KNEE, R_KNEE, SPINE2, L_ANKLE, R_ANKLE, SPINE3 = range(10)
L_FOOT, R_FOOT, NECK, L_COLLAR, R_COLLAR, HEAD, L_SHOULDER, R_SHOULDER = range(10, 18)
L_ELBOW, R_ELBOW, L_WRIST, R_WRIST = range(18, 22)

SIDES = (1.0, -1.0)
"""Lateral sign of the left (+X) and right (-X) limbs; index 0 = left, 1 = right."""

# Rest directions of each bone (child joint), a relaxed standing SMPL-like pose. Limb bones are
# placed by IK, so only their lengths matter; torso, hip, collar and head directions shape the body.
_REST_DIRS = np.array(
    [
        [0.0, 0.0, 0.0],  # 0 pelvis (root)
        [0.55, -0.8, -0.12],  # 1 left hip
        [-0.55, -0.8, -0.12],  # 2 right hip
        [0.0, 1.0, -0.18],  # 3 spine1
        [0.0, -1.0, 0.0],  # 4 left knee
        [0.0, -1.0, 0.0],  # 5 right knee
        [0.0, 1.0, 0.04],  # 6 spine2
        [0.0, -1.0, 0.0],  # 7 left ankle
        [0.0, -1.0, 0.0],  # 8 right ankle
        [0.0, 1.0, 0.3],  # 9 spine3
        [0.0, -0.5, 1.0],  # 10 left foot
        [0.0, -0.5, 1.0],  # 11 right foot
        [0.0, 1.0, -0.12],  # 12 neck
        [0.6, 0.78, -0.12],  # 13 left collar
        [-0.6, 0.78, -0.12],  # 14 right collar
        [0.0, 0.85, 0.45],  # 15 head
        [1.0, -0.12, -0.05],  # 16 left shoulder
        [-1.0, -0.12, -0.05],  # 17 right shoulder
        [0.0, -1.0, 0.0],  # 18 left elbow
        [0.0, -1.0, 0.0],  # 19 right elbow
        [0.0, -1.0, 0.0],  # 20 left wrist
        [0.0, -1.0, 0.0],  # 21 right wrist
    ]
)
REST_DIRS = _REST_DIRS / np.maximum(np.linalg.norm(_REST_DIRS, axis=1, keepdims=True), 1e-12)

# Which subject ratio scales each bone (besides the overall height).
_LEG = (L_KNEE, R_KNEE, L_ANKLE, R_ANKLE)
_FOOT = (L_FOOT, R_FOOT)
_ARM = (L_ELBOW, R_ELBOW, L_WRIST, R_WRIST)
_TORSO = (SPINE1, SPINE2, SPINE3, NECK, HEAD)
_WIDTH = (L_HIP, R_HIP, L_COLLAR, R_COLLAR, L_SHOULDER, R_SHOULDER)
# Mirror pairs (left, right) averaged so the default body is symmetric.
_PAIRS = ((1, 2), (4, 5), (7, 8), (10, 11), (13, 14), (16, 17), (18, 19), (20, 21))

_SUBJECT_RANGES = {
    "height": (0.85, 1.15),
    "leg": (0.9, 1.1),
    "arm": (0.9, 1.1),
    "torso": (0.9, 1.1),
    "width": (0.85, 1.15),
}


@dataclass(frozen=True)
class Subject:
    """One person's proportions (all ratios relative to the HumanML3D target skeleton).

    JSON-safe via ``to_dict``/``from_dict``. Bone length of joint ``j`` = base length (symmetrised
    HumanML3D target) x ``height`` x the ratio of its group (``leg``, ``arm``, ``torso``, ``width``).
    """

    height: float = 1.0
    leg: float = 1.0
    arm: float = 1.0
    torso: float = 1.0
    width: float = 1.0

    def __post_init__(self) -> None:
        for name, (lo, hi) in _SUBJECT_RANGES.items():
            value = getattr(self, name)
            if not isinstance(value, int | float) or not lo <= float(value) <= hi:
                raise ValueError(f"Subject.{name}={value!r} must be a number in [{lo}, {hi}]")

    def to_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> Subject:
        if not isinstance(data, dict):
            raise ValueError(f"Subject.from_dict: expected a dict, got {type(data).__name__}")
        unknown = set(data) - set(_SUBJECT_RANGES)
        if unknown:
            raise ValueError(
                f"Subject.from_dict: unknown field(s) {sorted(unknown)}; known {list(_SUBJECT_RANGES)}"
            )
        return cls(**{k: float(v) for k, v in data.items()})

    def bone_lengths(self) -> np.ndarray:
        """(J,) length of the bone ending at each joint (0 for the root), metres."""
        base = np.concatenate([[0.0], np.asarray(HML.target_bone_lengths, dtype=np.float64)])
        for a, b in _PAIRS:
            base[a] = base[b] = 0.5 * (base[a] + base[b])
        scale = np.full(HML.joints_num, self.height)
        for group, ratio in ((_LEG, self.leg), (_FOOT, self.leg), (_ARM, self.arm), (_TORSO, self.torso)):
            scale[list(group)] *= ratio
        scale[list(_WIDTH)] *= self.width
        return base * scale

    def offsets(self) -> np.ndarray:
        """(J, 3) rest offsets (bone direction x length) in the parent's frame."""
        return REST_DIRS * self.bone_lengths()[:, None]


def sample_subject(rng: np.random.Generator) -> Subject:
    """Draw a subject: height ~ N(1, 0.06), group ratios ~ N(1, 0.035), clipped to the valid ranges."""
    values = {}
    for name, (lo, hi) in _SUBJECT_RANGES.items():
        sd = 0.06 if name in ("height", "width") else 0.035
        values[name] = round(float(np.clip(rng.normal(1.0, sd), lo, hi)), 4)
    return Subject(**values)


@dataclass(frozen=True)
class BodyGeometry:
    """Derived constants of a subject used by the renderer (metres)."""

    offsets: np.ndarray
    """(J, 3) rest offsets."""
    thigh: float
    shin: float
    upper_arm: float
    forearm: float
    foot: float
    foot_angle: float
    """Rest downward pitch of the ankle->foot bone (rad)."""
    ankle_height: float
    """Ankle height when the foot is flat with its toe joint on the floor."""
    hip_half_width: float
    stand_height: float
    """Pelvis height standing with nearly straight legs."""
    leg_reach: float
    """Largest hip-ankle distance the IK allows (slightly bent knee)."""
    arm_reach: float

    @classmethod
    def from_subject(cls, subject: Subject) -> BodyGeometry:
        off = subject.offsets()
        lengths = np.linalg.norm(off, axis=1)
        foot_dir = REST_DIRS[L_FOOT]
        foot_angle = float(np.arcsin(-foot_dir[1]))
        foot = float(lengths[L_FOOT])
        ankle_h = foot * np.sin(foot_angle) + 0.015
        thigh, shin = float(lengths[L_KNEE]), float(lengths[L_ANKLE])
        reach = 0.985 * (thigh + shin)
        hip_drop = -off[L_HIP, 1]
        return cls(
            offsets=off,
            thigh=thigh,
            shin=shin,
            upper_arm=float(lengths[L_ELBOW]),
            forearm=float(lengths[L_WRIST]),
            foot=foot,
            foot_angle=foot_angle,
            ankle_height=float(ankle_h),
            hip_half_width=float(off[L_HIP, 0]),
            stand_height=float(ankle_h + hip_drop + 0.975 * (thigh + shin)),
            leg_reach=float(reach),
            arm_reach=float(0.985 * (lengths[L_ELBOW] + lengths[L_WRIST])),
        )


# ------------------------------------------------------------------------------------------------
# Rotation helpers (vectorised over leading dims)
# ------------------------------------------------------------------------------------------------


def rot_x(a: np.ndarray) -> np.ndarray:
    """(..., 3, 3) rotation about +X; positive angles turn +Y towards +Z."""
    a = np.asarray(a, dtype=np.float64)
    c, s = np.cos(a), np.sin(a)
    o, z = np.ones_like(a), np.zeros_like(a)
    return np.stack([np.stack([o, z, z], -1), np.stack([z, c, -s], -1), np.stack([z, s, c], -1)], -2)


def rot_y(a: np.ndarray) -> np.ndarray:
    """(..., 3, 3) rotation about +Y (yaw); positive angles turn +Z towards +X (to the left)."""
    a = np.asarray(a, dtype=np.float64)
    c, s = np.cos(a), np.sin(a)
    o, z = np.ones_like(a), np.zeros_like(a)
    return np.stack([np.stack([c, z, s], -1), np.stack([z, o, z], -1), np.stack([-s, z, c], -1)], -2)


def rot_z(a: np.ndarray) -> np.ndarray:
    """(..., 3, 3) rotation about +Z; positive angles turn +X towards +Y."""
    a = np.asarray(a, dtype=np.float64)
    c, s = np.cos(a), np.sin(a)
    o, z = np.ones_like(a), np.zeros_like(a)
    return np.stack([np.stack([c, -s, z], -1), np.stack([s, c, z], -1), np.stack([z, z, o], -1)], -2)


def _apply(r: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Rotate vectors: r (..., 3, 3), v (..., 3) -> (..., 3)."""
    return np.einsum("...ij,...j->...i", r, v)


def _normalize(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-9)


def two_bone_ik(
    root: np.ndarray, target: np.ndarray, pole: np.ndarray, a: float, b: float, reach: float
) -> tuple[np.ndarray, np.ndarray]:
    """Analytic two-bone IK with exact bone lengths.

    Args:
        root: (T, 3) hip/shoulder positions; target: (T, 3) desired ankle/wrist positions;
        pole: (T, 3) direction the knee/elbow should bend towards; a, b: upper and lower bone
        lengths; reach: largest allowed root-end distance (< a + b, so the joint never locks).

    Returns:
        (mid, end): (T, 3) knee/elbow and ankle/wrist positions with |mid-root| = a, |end-mid| = b.
        Targets out of reach are pulled along the root-target line.
    """
    delta = target - root
    dist = np.linalg.norm(delta, axis=-1, keepdims=True)
    direction = _normalize(delta)
    d = np.clip(dist, abs(a - b) + 0.05 * (a + b), reach)
    x = (a * a - b * b + d * d) / (2.0 * d)
    h = np.sqrt(np.maximum(a * a - x * x, 0.0))
    perp = pole - np.sum(pole * direction, -1, keepdims=True) * direction
    # A pole parallel to the limb has no usable perpendicular; fall back to a fixed axis.
    fallback = np.cross(direction, np.array([1.0, 0.0, 0.0]))
    small = np.linalg.norm(perp, axis=-1, keepdims=True) < 1e-6
    perp = _normalize(np.where(small, fallback, perp))
    mid = root + direction * x + perp * h
    end = root + direction * d
    return mid, end


@dataclass
class PoseParams:
    """Per-frame pose parameters the renderer solves into joint positions (T frames).

    All positions are metres in the world frame; hand targets are relative to the shoulder in the
    heading frame (world rotated by ``yaw``), so they do not tilt with the torso.
    """

    root: np.ndarray
    """(T, 3) pelvis position (its height is lowered where the legs cannot reach the feet)."""
    yaw: np.ndarray
    """(T,) facing angle (rad, positive = turned left)."""
    pelvis_tilt: np.ndarray
    """(T, 2) pelvis pitch (forward lean) and roll (rad)."""
    spine: np.ndarray
    """(T, 3) spine pitch (bend forward), roll (lean left), twist (rad), split over spine1/spine2."""
    neck: np.ndarray
    """(T, 2) neck pitch (nod) and yaw (rad)."""
    feet: np.ndarray
    """(T, 2, 3) ankle targets [left, right]."""
    foot_yaw: np.ndarray
    """(T, 2) foot heading (rad)."""
    foot_pitch: np.ndarray
    """(T, 2) toe-down pitch added to the rest foot angle (rad)."""
    hands: np.ndarray
    """(T, 2, 3) wrist targets relative to the shoulder, heading frame."""
    elbow_pole: np.ndarray
    """(T, 2, 3) elbow bend direction, heading frame."""


def solve_pose(params: PoseParams, geom: BodyGeometry) -> np.ndarray:
    """Joint positions (T, 22, 3) for per-frame pose parameters (metres, HumanML3D tree)."""
    off = geom.offsets
    n = params.root.shape[0]
    yaw_r = rot_y(params.yaw)
    r0 = yaw_r @ rot_x(params.pelvis_tilt[:, 0]) @ rot_z(params.pelvis_tilt[:, 1])
    out = np.zeros((n, HML.joints_num, 3))
    root = params.root.copy()

    # Lower the pelvis where a leg could not reach its ankle target (keeps planted feet planted),
    # but by at most a third of the leg: beyond that the foot gives way instead of the body collapsing.
    lowest = root[:, 1] - 0.33 * (geom.thigh + geom.shin)
    for k, hip in enumerate((L_HIP, R_HIP)):
        hip_off = _apply(r0, off[hip])
        hip_xz = root[:, [0, 2]] + hip_off[:, [0, 2]]
        dxz2 = np.sum((hip_xz - params.feet[:, k, [0, 2]]) ** 2, axis=-1)
        dy = np.sqrt(np.maximum(geom.leg_reach**2 - dxz2, 0.0))
        root[:, 1] = np.maximum(np.minimum(root[:, 1], params.feet[:, k, 1] + dy - hip_off[:, 1]), lowest)
    out[:, PELVIS] = root

    # Torso: bend split 45/55 between spine1 and spine2; spine3 and the collars are rigid.
    sp = params.spine
    r_sp1 = r0 @ rot_y(0.45 * sp[:, 2]) @ rot_x(0.45 * sp[:, 0]) @ rot_z(-0.45 * sp[:, 1])
    r_sp2 = r_sp1 @ rot_y(0.55 * sp[:, 2]) @ rot_x(0.55 * sp[:, 0]) @ rot_z(-0.55 * sp[:, 1])
    out[:, SPINE1] = root + _apply(r0, off[SPINE1])
    out[:, SPINE2] = out[:, SPINE1] + _apply(r_sp1, off[SPINE2])
    out[:, SPINE3] = out[:, SPINE2] + _apply(r_sp2, off[SPINE3])
    out[:, NECK] = out[:, SPINE3] + _apply(r_sp2, off[NECK])
    r_neck = r_sp2 @ rot_y(params.neck[:, 1]) @ rot_x(params.neck[:, 0])
    out[:, HEAD] = out[:, NECK] + _apply(r_neck, off[HEAD])
    for collar, shoulder in ((L_COLLAR, L_SHOULDER), (R_COLLAR, R_SHOULDER)):
        out[:, collar] = out[:, SPINE3] + _apply(r_sp2, off[collar])
        out[:, shoulder] = out[:, collar] + _apply(r_sp2, off[shoulder])

    # Legs: knees bend towards the heading direction (slightly outwards).
    fwd = _apply(yaw_r, np.array([0.0, 0.0, 1.0]))
    for k, (hip, knee, ankle, foot) in enumerate(
        ((L_HIP, L_KNEE, L_ANKLE, L_FOOT), (R_HIP, R_KNEE, R_ANKLE, R_FOOT))
    ):
        out[:, hip] = root + _apply(r0, off[hip])
        side = _apply(yaw_r, np.array([SIDES[k], 0.0, 0.0]))
        pole = fwd + 0.15 * side + np.array([0.0, 0.1, 0.0])
        out[:, knee], out[:, ankle] = two_bone_ik(
            out[:, hip], params.feet[:, k], pole, geom.thigh, geom.shin, geom.leg_reach
        )
        pitch = geom.foot_angle + params.foot_pitch[:, k]
        fy = params.foot_yaw[:, k]
        toe_dir = np.stack([np.sin(fy) * np.cos(pitch), -np.sin(pitch), np.cos(fy) * np.cos(pitch)], -1)
        out[:, foot] = out[:, ankle] + geom.foot * toe_dir

    # Arms: wrist targets in the heading frame relative to each shoulder.
    for k, (shoulder, elbow, wrist) in enumerate(
        ((L_SHOULDER, L_ELBOW, L_WRIST), (R_SHOULDER, R_ELBOW, R_WRIST))
    ):
        target = out[:, shoulder] + _apply(yaw_r, params.hands[:, k])
        pole = _apply(yaw_r, params.elbow_pole[:, k])
        out[:, elbow], out[:, wrist] = two_bone_ik(
            out[:, shoulder], target, pole, geom.upper_arm, geom.forearm, geom.arm_reach
        )
    return out


# HumanML3D joint feeding each KIT-ML joint (spec 1.2: KIT 0 root, 1-4 spine to head, 5-7 right arm,
# 8-10 left arm, 11-15 right leg, 16-20 left leg). KIT toes (15, 20) are extrapolated past the
# HumanML3D foot joint. Every KIT bone spans HumanML3D bones that move rigidly together.
_KIT_FROM_HML = (PELVIS, SPINE1, SPINE2, NECK, HEAD, R_SHOULDER, R_ELBOW, R_WRIST, L_SHOULDER, L_ELBOW,
                 L_WRIST, R_HIP, R_KNEE, R_ANKLE, R_FOOT, -1, L_HIP, L_KNEE, L_ANKLE, L_FOOT, -1)  # fmt: skip
_KIT_TOE_LENGTH = 0.05


def to_dataset_skeleton(joints: np.ndarray, spec: DatasetSpec) -> np.ndarray:
    """Map generator joints (T, 22, 3) in metres to ``spec``'s tree and units.

    HumanML3D: unchanged. KIT-ML: 21 joints (toes extrapolated 5 cm along the foot), millimetres.
    """
    if spec.joints_num == HML.joints_num:
        return joints / spec.metres_per_unit
    if spec.joints_num != len(_KIT_FROM_HML):
        raise ValueError(
            f"no mapping from the generator skeleton to {spec.name!r} ({spec.joints_num} joints)"
        )
    idx = np.array(_KIT_FROM_HML)
    out = joints[:, np.maximum(idx, 0)].copy()
    for toe, foot, ankle in ((15, R_FOOT, R_ANKLE), (20, L_FOOT, L_ANKLE)):
        out[:, toe] = joints[:, foot] + _KIT_TOE_LENGTH * _normalize(joints[:, foot] - joints[:, ankle])
    return out / spec.metres_per_unit
