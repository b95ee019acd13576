"""Small procedural joint sequences for tests and benchmarks of the motion representation.

Not the SynthML dataset: just smooth, non-degenerate "walking-ish" motion on a skeleton whose bone
lengths differ from the dataset's target skeleton (so retargeting matters), with a yaw turn, a root
translation and joints rotating at their own frequencies. Deterministic given the generator.
"""

from __future__ import annotations

import numpy as np

from data.specs import DatasetSpec, get_dataset_spec
from data.synth.body import rot_x, rot_y, rot_z


def rest_pose(offsets: np.ndarray, dataset: str | DatasetSpec = "humanml3d") -> np.ndarray:
    """``(J, 3)`` rest pose obtained by chaining ``(J, 3)`` offsets along the kinematic chains."""
    spec = get_dataset_spec(dataset)
    if offsets.shape != (spec.joints_num, 3):
        raise ValueError(
            f"offsets: expected ({spec.joints_num}, 3) for dataset {spec.name!r}, got {offsets.shape}"
        )
    pose = np.zeros((spec.joints_num, 3))
    for chain in spec.kinematic_chain:
        for prev, cur in zip(chain[:-1], chain[1:], strict=True):
            pose[cur] = pose[prev] + offsets[cur]
    return pose


def synthetic_motion(
    num_frames: int,
    dataset: str | DatasetSpec = "humanml3d",
    rng: np.random.Generator | None = None,
    bone_scale_range: tuple[float, float] = (0.85, 1.2),
) -> np.ndarray:
    """A smooth walking-ish joint sequence ``(num_frames, J, 3)`` float64, Y up, dataset units.

    The skeleton is the dataset's target skeleton with every bone scaled by a random factor in
    ``bone_scale_range``; joints swing sinusoidally (hierarchical FK), the root walks forward at
    ~1 m/s while turning, bobs vertically, and starts at a random place and heading.
    """
    spec = get_dataset_spec(dataset)
    rng = np.random.default_rng(0) if rng is None else rng
    j = spec.joints_num
    unit = 1.0 / spec.metres_per_unit  # dataset units per metre
    offsets = spec.target_offsets * rng.uniform(*bone_scale_range, size=(j, 1))
    t = np.arange(num_frames) / spec.fps
    omega = 2 * np.pi * rng.uniform(0.6, 1.2)

    parents = spec.parents
    children = {p for p in parents[1:]}
    local = np.broadcast_to(np.eye(3), (num_frames, j, 3, 3)).copy()
    for joint in range(1, j):
        if joint not in children:
            continue
        amp_x, amp_z = rng.uniform(0.1, 0.5), rng.uniform(0.0, 0.15)
        phase = rng.uniform(0, 2 * np.pi)
        local[:, joint] = rot_x(amp_x * np.sin(omega * t + phase)) @ rot_z(
            amp_z * np.sin(omega * t + 2 * phase)
        )

    yaw = rng.uniform(-np.pi, np.pi) + rng.uniform(-0.6, 0.6) * t  # heading (rad) turning over time
    speed = rng.uniform(0.3, 1.4) * unit
    step = speed / spec.fps
    heading = np.stack([np.sin(yaw), np.zeros_like(yaw), np.cos(yaw)], -1)
    root = np.cumsum(heading * step, axis=0)
    root += rng.uniform(-2, 2, size=3) * unit
    root[:, 1] = 0.95 * unit + 0.02 * unit * np.sin(2 * omega * t)

    glob = np.empty((num_frames, j, 3, 3))
    pos = np.empty((num_frames, j, 3))
    glob[:, 0] = rot_y(yaw) @ rot_x(0.05 * np.sin(2 * omega * t))
    pos[:, 0] = root
    for chain in spec.kinematic_chain:
        for prev, cur in zip(chain[:-1], chain[1:], strict=True):
            pos[:, cur] = pos[:, prev] + glob[:, prev] @ offsets[cur]
            glob[:, cur] = glob[:, prev] @ local[:, cur]
    return pos
