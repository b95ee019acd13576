"""Joint-position motions to BVH (Biovision hierarchy) files through ``bvhio``, and back.

A motion of joint positions ``(T, J, 3)`` (Y up, the dataset's units; ``recover_from_ric`` of
features, a ``new_joints`` file, a VQ reconstruction or a generated motion) becomes a BVH file whose
hierarchy is the dataset's kinematic tree (``DatasetSpec.parents``, joints named by
``DatasetSpec.joint_names``), in metres (``DatasetSpec.metres_per_unit``), Y up, one frame per
motion frame at the dataset's rate (``Frame Time = 1 / fps``). Blender (File > Import > Motion
Capture) and other BVH viewers open it as an armature.

**Skeleton** (:func:`fit_skeleton`): every bone's rest offset is the spec's unit rest direction
(``raw_offsets``) times the motion's own mean bone length, so a motion with rigid bones is
reproduced exactly. For a joint with several children (the pelvis, and the upper spine where the
arms and neck start) one rotation must place all the children; the rest offsets of those children
are fitted to the motion (alternating least squares: per-frame Kabsch rotations, then the mean of
the de-rotated child vectors) and turned as a whole to lie closest to the spec's rest directions,
so the rest pose stays the dataset's and the children's layout is the motion's.

**Rotations** (:func:`solve_pose`, inverse kinematics from positions, vectorised over frames): top
down, with ``G_j`` a joint's world rotation and ``Q_j`` its position as the BVH will place it,

* a joint with one child ``c`` turns its rest offset onto the direction ``P_c - Q_j`` by the
  shortest arc, taken in the parent's frame (``L_j = arc(o_c, G_parent^T (P_c - Q_j))``), so the
  twist about the bone follows the parent's instead of jumping;
* a joint with several children takes the Kabsch rotation of their rest offsets onto
  ``P_C - Q_j`` (least squares over the children);
* a leaf (its child is an ``End Site``) keeps its parent's rotation (identity channel).

Aiming from ``Q_j`` (not from the true ``P_j``) keeps errors from adding up along a chain: a joint
ends off its target by its own bone's length change (``|P_c - Q_j|`` against the mean) plus, below
a joint with several children, the Kabsch residual. Twist about a bone cannot be recovered from
positions; the shortest arc picks the least twist. ``joint_positions=True`` also writes a position
channel on every joint (the local offset per frame), which makes every joint exact for any motion
(for decoded motions whose bone lengths drift); Blender's importer reads those channels too.

Measured read-back error (``read_bvh`` through bvhio's own forward kinematics, against the input
in metres; numbers are written with 6 decimals and bvhio computes in float32): at most 2e-6 m over
40 SynthML test motions (their ``new_joints`` and their decoded features), whose bones are rigid;
2.3 cm (mean 3 mm) for a demo VQ reconstruction whose decoded bone lengths vary by up to 8 mm
(:attr:`BvhExport.max_error` reports it per file); 2e-6 m for it with ``joint_positions=True``.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import bvhio
import numpy as np
from pyglm import glm
from scipy.spatial.transform import Rotation

from data.run_folder import atomic_write_bytes
from data.specs import DatasetSpec, get_dataset_spec

logger = logging.getLogger(__name__)

ROOT_CHANNELS = ["Xposition", "Yposition", "Zposition", "Zrotation", "Xrotation", "Yrotation"]
"""Channels of the root (and of every joint with ``joint_positions=True``)."""
JOINT_CHANNELS = ["Zrotation", "Xrotation", "Yrotation"]
"""Channels of the other joints: intrinsic Z, then X, then Y rotation, in degrees."""
PRECISION = 6
"""Decimals written for every number (1e-6 m; 1e-6 degree)."""
REFINE_ITERATIONS = 5
"""Alternating least-squares rounds fitting the rest offsets below joints with several children."""
END_SITE_FRACTION = 0.5
"""An End Site continues a leaf's bone direction for this share of the leaf's bone length."""
_EPS = 1e-9


def _children(parents: np.ndarray) -> list[list[int]]:
    out: list[list[int]] = [[] for _ in parents]
    for joint, parent in enumerate(parents):
        if parent >= 0:
            out[int(parent)].append(joint)
    return out


@dataclass(frozen=True)
class BvhSkeleton:
    """A BVH hierarchy: joint names, parents and rest offsets (metres)."""

    names: tuple[str, ...]
    """(J,) joint names."""
    parents: np.ndarray
    """(J,) parent index, -1 for the root (index 0)."""
    offsets: np.ndarray
    """(J, 3) rest offset of each joint from its parent (the root's is zero)."""
    end_sites: np.ndarray
    """(J, 3) End Site offset of each leaf joint (zero for joints with children)."""

    @property
    def children(self) -> list[list[int]]:
        """Children of each joint, in index order."""
        return _children(self.parents)

    @property
    def order(self) -> list[int]:
        """Joints in depth-first order from the root (the order of the BVH file's channels)."""
        children, out, stack = self.children, [], [0]
        while stack:
            joint = stack.pop()
            out.append(joint)
            stack.extend(reversed(children[joint]))
        return out


@dataclass(frozen=True)
class BvhPose:
    """Per-frame BVH channels found by :func:`solve_pose` (metres)."""

    root_position: np.ndarray
    """(T, 3) root translation."""
    local_rotations: np.ndarray
    """(T, J, 3, 3) rotation of each joint relative to its parent's frame."""
    local_positions: np.ndarray | None
    """(T, J, 3) offset of each joint from its parent in the parent's frame (``joint_positions``)."""


@dataclass(frozen=True)
class BvhExport:
    """What :func:`write_bvh` / :func:`motion_to_bvh` produced."""

    text: str
    """The BVH file's content."""
    skeleton: BvhSkeleton
    frames: int
    frame_time: float
    max_error: float
    """Largest distance (metres) between an input joint and the same joint under the BVH's
    forward kinematics (:func:`forward_kinematics`, before rounding to :data:`PRECISION`)."""
    mean_error: float
    """Mean of that distance over frames and joints (metres)."""


@dataclass(frozen=True)
class BvhMotion:
    """A BVH file read back by :func:`read_bvh`."""

    names: tuple[str, ...]
    """(J,) joint names in the file's order."""
    joints: np.ndarray
    """(T, J, 3) world joint positions in the file's units (metres for files written here)."""
    frame_time: float

    def reorder(self, names: tuple[str, ...] | list[str]) -> np.ndarray:
        """``(T, len(names), 3)`` positions of the named joints, e.g. in the dataset's joint order."""
        index = {n: k for k, n in enumerate(self.names)}
        missing = [n for n in names if n not in index]
        if missing:
            raise KeyError(f"BVH has no joint(s) {missing}; it has {list(self.names)}")
        return self.joints[:, [index[n] for n in names]]


# ----------------------------------------------------------------------------------------------
# Rotation helpers (vectorised, float64)
# ----------------------------------------------------------------------------------------------


def _unit(v: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    return v / np.maximum(n, _EPS)


def shortest_arc(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(..., 3, 3)`` rotations turning directions ``a`` onto ``b`` (``(..., 3)``) by the least angle.

    Rodrigues with axis ``a x b``: ``R = I + [v]x + [v]x^2 / (1 + a.b)``. Opposite directions turn
    by pi about an axis perpendicular to ``a``; a zero vector gives the identity.
    """
    a, b = np.broadcast_arrays(_unit(a), _unit(b))
    v = np.cross(a, b)
    c = np.einsum("...i,...i->...", a, b)
    zero = (np.linalg.norm(a, axis=-1) < 0.5) | (np.linalg.norm(b, axis=-1) < 0.5)
    opposite = (c < -1 + 1e-8) & ~zero
    vx = np.zeros((*v.shape, 3))
    vx[..., 0, 1], vx[..., 0, 2], vx[..., 1, 2] = -v[..., 2], v[..., 1], -v[..., 0]
    vx = vx - np.swapaxes(vx, -1, -2)
    scale = np.where(opposite | zero, 0.0, 1.0 / np.maximum(1.0 + c, 1e-8))
    rot = np.eye(3) + vx + (vx @ vx) * scale[..., None, None]
    if opposite.any():
        # pi about an axis perpendicular to a (a crossed with the axis of its smallest component)
        aa = a[opposite]
        helper = np.eye(3)[np.argmin(np.abs(aa), axis=-1)]
        axis = _unit(np.cross(aa, helper))
        rot[opposite] = 2 * axis[:, :, None] * axis[:, None, :] - np.eye(3)
    rot[zero] = np.eye(3)
    return rot


def kabsch(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``(..., 3, 3)`` rotations ``R`` minimising ``sum_k |R source_k - target_k|^2``.

    Args:
        source: ``(..., K, 3)`` vectors (e.g. rest offsets of a joint's children).
        target: ``(..., K, 3)`` vectors to align them with.
    """
    h = np.swapaxes(source, -1, -2) @ target  # (..., 3, 3) = sum_k source_k target_k^T
    u, _, vt = np.linalg.svd(h)
    d = np.sign(np.linalg.det(np.swapaxes(vt, -1, -2) @ np.swapaxes(u, -1, -2)))
    fix = np.ones((*d.shape, 3))
    fix[..., 2] = np.where(d == 0, 1.0, d)
    return np.swapaxes(vt, -1, -2) @ (fix[..., :, None] * np.swapaxes(u, -1, -2))


# ----------------------------------------------------------------------------------------------
# Skeleton, inverse and forward kinematics
# ----------------------------------------------------------------------------------------------


def _check_joints(joints: np.ndarray, spec: DatasetSpec) -> np.ndarray:
    joints = np.asarray(joints)
    if joints.ndim != 3 or joints.shape[1:] != (spec.joints_num, 3):
        raise ValueError(
            f"joints of shape {joints.shape}: expected (T, {spec.joints_num}, 3) joint positions of "
            f"dataset {spec.name!r} (decode (T, {spec.feat_dim}) features with "
            "data.motion_repr.recover_from_ric first)"
        )
    if len(joints) == 0:
        raise ValueError("joints: a motion with 0 frames cannot be exported")
    if not np.isfinite(joints).all():
        raise ValueError("joints: contains NaN or inf")
    return joints.astype(np.float64) * spec.metres_per_unit


def joint_names(spec: DatasetSpec | str) -> tuple[str, ...]:
    """The spec's joint names, or ``joint_<index>`` when it has none."""
    spec = get_dataset_spec(spec)
    if spec.joint_names:
        if len(spec.joint_names) != spec.joints_num:
            raise ValueError(
                f"dataset {spec.name!r}: {len(spec.joint_names)} joint_names for {spec.joints_num} joints"
            )
        return tuple(spec.joint_names)
    return tuple(f"joint_{j:02d}" for j in range(spec.joints_num))


def fit_skeleton(joints: np.ndarray, spec: DatasetSpec | str) -> BvhSkeleton:
    """The BVH skeleton of one motion (see the module docstring), in metres.

    Args:
        joints: ``(T, J, 3)`` joint positions in the dataset's units.
        spec: dataset spec or name (parents, rest directions, joint names, units).
    """
    spec = get_dataset_spec(spec)
    pos = _check_joints(joints, spec)
    parents = spec.parents
    bones = pos[:, 1:] - pos[:, parents[1:]]  # (T, J-1, 3)
    lengths = np.concatenate([[0.0], np.linalg.norm(bones, axis=-1).mean(0)])
    offsets = spec.raw_offsets_array * lengths[:, None]
    children = _children(parents)
    for joint, kids in enumerate(children):
        if len(kids) < 2:
            continue
        rest = offsets[kids]  # (K, 3) the spec's layout
        posed = pos[:, kids] - pos[:, joint : joint + 1]  # (T, K, 3)
        fitted = rest
        for _ in range(REFINE_ITERATIONS):
            rot = kabsch(fitted, posed)  # (T, 3, 3)
            fitted = np.einsum("tji,tkj->ki", rot, posed) / len(pos)  # mean of R_t^T posed_t
        # Turn the fitted layout as a whole to lie closest to the spec's rest directions.
        offsets[kids] = fitted @ kabsch(fitted, rest).T
    leaves = np.array([not kids for kids in children]) & (parents >= 0)
    end_sites = spec.raw_offsets_array * (lengths * END_SITE_FRACTION * leaves)[:, None]
    return BvhSkeleton(names=joint_names(spec), parents=parents, offsets=offsets, end_sites=end_sites)


def solve_pose(joints: np.ndarray, skeleton: BvhSkeleton, spec: DatasetSpec | str, *,
               joint_positions: bool = False) -> BvhPose:  # fmt: skip
    """BVH channels that place ``skeleton``'s joints on ``joints`` (inverse kinematics, see module doc).

    Args:
        joints: ``(T, J, 3)`` joint positions in the dataset's units.
        skeleton: from :func:`fit_skeleton` (metres).
        spec: the dataset of ``joints``.
        joint_positions: also return per-joint local positions (exact placement of every joint).
    """
    spec = get_dataset_spec(spec)
    pos = _check_joints(joints, spec)
    t, j = pos.shape[:2]
    children, parents = skeleton.children, skeleton.parents
    world = np.empty((t, j, 3, 3))
    local = np.broadcast_to(np.eye(3), (t, j, 3, 3)).copy()
    placed = np.empty_like(pos)  # where the BVH puts each joint
    placed[:, 0] = pos[:, 0]
    local_pos = None
    if joint_positions:
        local_pos = np.zeros_like(pos)
        local_pos[:, 0] = pos[:, 0]
    for joint in skeleton.order:
        parent = parents[joint]
        parent_world = world[:, parent] if parent >= 0 else np.broadcast_to(np.eye(3), (t, 3, 3))
        if parent >= 0:
            if local_pos is not None:
                local_pos[:, joint] = np.einsum("tji,tj->ti", parent_world, pos[:, joint] - placed[:, parent])
                step = local_pos[:, joint]
            else:
                step = np.broadcast_to(skeleton.offsets[joint], (t, 3))
            placed[:, joint] = placed[:, parent] + np.einsum("tij,tj->ti", parent_world, step)
        kids = children[joint]
        # Targets of the children seen from where this joint is placed, in the parent's frame.
        seen = np.einsum("tji,tkj->tki", parent_world, pos[:, kids] - placed[:, joint : joint + 1])
        if len(kids) == 1:
            local[:, joint] = shortest_arc(skeleton.offsets[kids[0]], seen[:, 0])
        elif len(kids) > 1:
            local[:, joint] = kabsch(skeleton.offsets[kids], seen)
        world[:, joint] = parent_world @ local[:, joint]
    return BvhPose(root_position=pos[:, 0].copy(), local_rotations=local, local_positions=local_pos)


def forward_kinematics(skeleton: BvhSkeleton, pose: BvhPose) -> np.ndarray:
    """``(T, J, 3)`` world joint positions (metres) of ``pose`` on ``skeleton``."""
    t, j = pose.local_rotations.shape[:2]
    world = np.empty((t, j, 3, 3))
    out = np.empty((t, j, 3))
    for joint in skeleton.order:
        parent = skeleton.parents[joint]
        if parent < 0:
            world[:, joint] = pose.local_rotations[:, joint]
            out[:, joint] = pose.root_position
            continue
        step = pose.local_positions[:, joint] if pose.local_positions is not None else skeleton.offsets[joint]
        out[:, joint] = out[:, parent] + np.einsum(
            "tij,tj->ti", world[:, parent], np.broadcast_to(step, (t, 3))
        )
        world[:, joint] = world[:, parent] @ pose.local_rotations[:, joint]
    return out


# ----------------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------------


def _bvh_tree(skeleton: BvhSkeleton, pose: BvhPose) -> bvhio.BvhJoint:
    """bvhio's joint tree with one keyframe (local position, rotation) per frame."""
    quats = Rotation.from_matrix(pose.local_rotations.reshape(-1, 3, 3)).as_quat()  # (T*J, 4) x y z w
    quats = quats.reshape(*pose.local_rotations.shape[:2], 4)
    t = len(quats)
    nodes: list[bvhio.BvhJoint] = []
    for joint, name in enumerate(skeleton.names):
        node = bvhio.BvhJoint(name, glm.vec3(*skeleton.offsets[joint]))
        node.EndSite = glm.vec3(*skeleton.end_sites[joint])
        positioned = joint == 0 or pose.local_positions is not None
        node.Channels = list(ROOT_CHANNELS if positioned else JOINT_CHANNELS)
        if joint == 0:
            where = pose.root_position
        elif pose.local_positions is not None:
            where = pose.local_positions[:, joint]
        else:
            where = np.broadcast_to(skeleton.offsets[joint], (t, 3))
        node.Keyframes = [
            bvhio.Pose(glm.vec3(*p), glm.quat(q[3], q[0], q[1], q[2]))
            for p, q in zip(where.tolist(), quats[:, joint].tolist(), strict=True)
        ]
        nodes.append(node)
    for joint, parent in enumerate(skeleton.parents):
        if parent >= 0:
            nodes[int(parent)].Children.append(nodes[joint])
    return nodes[0]


def motion_to_bvh(joints: np.ndarray, spec: DatasetSpec | str = "humanml3d", *,
                  joint_positions: bool = False) -> BvhExport:  # fmt: skip
    """BVH text of a joint-position motion (nothing written; see :func:`write_bvh`).

    Args:
        joints: ``(T, J, 3)`` joint positions in the dataset's units (Y up).
        spec: dataset spec or name.
        joint_positions: write a position channel on every joint too (exact for any motion).

    Raises:
        ValueError: ``joints`` is not ``(T, J, 3)`` of the dataset, is empty or not finite.
    """
    spec = get_dataset_spec(spec)
    target = _check_joints(joints, spec)
    skeleton = fit_skeleton(joints, spec)
    pose = solve_pose(joints, skeleton, spec, joint_positions=joint_positions)
    error = np.linalg.norm(forward_kinematics(skeleton, pose) - target, axis=-1)
    container = bvhio.BvhContainer(_bvh_tree(skeleton, pose), len(target), 1.0 / spec.fps)
    # bvhio writes to a path only; the file is made in a private folder and returned as text.
    with tempfile.TemporaryDirectory(prefix="bvh_export_") as tmp:
        path = Path(tmp) / "motion.bvh"
        bvhio.writeBvh(str(path), container, percision=PRECISION)
        text = path.read_text()
    return BvhExport(text=text, skeleton=skeleton, frames=len(target), frame_time=1.0 / spec.fps,
                     max_error=float(error.max()), mean_error=float(error.mean()))  # fmt: skip


def write_bvh(joints: np.ndarray, path: str | Path, spec: DatasetSpec | str = "humanml3d", *,
              joint_positions: bool = False) -> BvhExport:  # fmt: skip
    """Write a joint-position motion to ``path`` as BVH, atomically (see :func:`motion_to_bvh`)."""
    export = motion_to_bvh(joints, spec, joint_positions=joint_positions)
    atomic_write_bytes(path, export.text.encode("utf-8"))
    logger.info("wrote %s (%d frames, max joint error %.2e m)", path, export.frames, export.max_error)
    return export


def read_bvh(path: str | Path) -> BvhMotion:
    """Read a BVH file and compute its world joint positions with bvhio's forward kinematics.

    Returns:
        :class:`BvhMotion` with ``(T, J, 3)`` positions in the file's units, joints in file order.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"BVH file not found: {path}")
    try:
        frame_time = float(bvhio.readAsBvh(str(path), loadKeyFrames=False).FrameTime)
        root = bvhio.readAsHierarchy(str(path))
    except SyntaxError as err:
        raise ValueError(f"{path}: not a readable BVH file ({err.msg})") from err
    layout = [joint for joint, _, _ in root.layout()]
    frames = root.getKeyframeRange()[1] + 1
    out = np.empty((frames, len(layout), 3))
    for frame in range(frames):
        root.loadPose(frame, recursive=True)
        for k, joint in enumerate(layout):
            out[frame, k] = tuple(joint.PositionWorld)
    return BvhMotion(names=tuple(j.Name for j in layout), joints=out, frame_time=frame_time)
