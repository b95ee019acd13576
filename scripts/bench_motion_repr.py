"""Benchmark: joints -> features and features -> joints (data/motion_repr.py) vs a per-frame loop.

Workload: ``num_seqs`` seeded procedural walking-ish sequences of ``frames`` frames
(:func:`data.motion_fixtures.synthetic_motion`, bone lengths differing from the target skeleton).

- baseline: a literal per-frame Python implementation of spec 1.3-1.4 written below
  (``_reference_features``): per-frame, per-bone IK with quaternions, quaternion FK for the
  retargeting, per-frame rotations and rows. It is timed on the first ``baseline_seqs`` sequences and
  its output is compared with ours (must agree within ``tolerance``; exit 1 otherwise).
- ours: :func:`data.motion_repr.joints_to_features` one sequence at a time, and
  :func:`data.motion_repr.joints_to_features_batch` on equal-length groups of ``batch_size``.
- inverse: :func:`data.motion_repr.recover_from_ric` per sequence (NumPy) and on the whole stacked
  batch (NumPy and torch).

Prints sequences/second, ms/sequence, the speed-up over the baseline, and the projected time for the
29,228-clip HumanML3D corpus (target: under two minutes for joints_to_features on 2 cores; one
process uses one core here, so the 2-core projection halves it). BLAS/OpenMP threads are pinned
through ``OMP/OPENBLAS/MKL_NUM_THREADS`` before numpy loads.

Run from the repository root::

    .venv/bin/python -m scripts.bench_motion_repr
    .venv/bin/python -m scripts.bench_motion_repr num_seqs=200 baseline_seqs=3 dataset=kit
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass

from data.config import parse_cli


@dataclass
class BenchConfig:
    """Workload size and thread pinning."""

    dataset: str = "humanml3d"
    """Dataset spec name (humanml3d or kit)."""
    num_seqs: int = 1000
    """Sequences timed for our implementation."""
    frames: int = 196
    """Frames per sequence."""
    baseline_seqs: int = 5
    """Sequences timed for the per-frame baseline (it is ~100x slower)."""
    batch_size: int = 16
    """Group size for joints_to_features_batch."""
    corpus_clips: int = 29228
    """Clips in the full HumanML3D corpus, for the projection."""
    threads: int = 1
    """BLAS/OpenMP threads."""
    seed: int = 0
    """Seed of the sequence generator."""
    tolerance: float = 1e-4
    """Max |ours - baseline| allowed on non-rotation features, relative to the dataset unit (metres)."""


def _reference_features(joints, spec, feet_threshold):  # noqa: C901 - deliberately literal
    """Per-frame literal implementation of spec 1.3-1.4 (the baseline). (T, J, 3) -> (T-1, D)."""
    import numpy as np
    from scipy.ndimage import gaussian_filter1d

    from data.quaternion import qbetween, qinv, qmul, qrot, quat_to_cont6d

    chains = spec.kinematic_chain
    raw = spec.raw_offsets_array
    parents = spec.parents
    z_axis, up = np.array([0.0, 0.0, 1.0]), np.array([0.0, 1.0, 0.0])
    n_frames, n_joints = joints.shape[:2]

    def ik(pos, smooth):
        a, b, c, d = spec.face_joint_indx
        fwd = np.zeros((n_frames, 3))
        for t in range(n_frames):
            across = (pos[t, b] - pos[t, a]) + (pos[t, c] - pos[t, d])
            fwd[t] = np.cross(up, across / np.linalg.norm(across))
        if smooth:
            fwd = gaussian_filter1d(fwd, 20, axis=0, mode="nearest")
        quats = np.zeros((n_frames, n_joints, 4))
        for t in range(n_frames):
            root = qbetween(fwd[t] / np.linalg.norm(fwd[t]), z_axis) if t > 0 else np.array([1.0, 0, 0, 0])
            quats[t, 0] = root
            for chain in chains:
                rot = root
                for k in range(len(chain) - 1):
                    v = pos[t, chain[k + 1]] - pos[t, chain[k]]
                    glob = qbetween(raw[chain[k + 1]], v / np.linalg.norm(v))
                    loc = qmul(qinv(rot), glob)
                    quats[t, chain[k + 1]] = loc
                    rot = qmul(rot, loc)
        return quats

    def fk(quats, root_pos, offsets):
        out = np.zeros((n_frames, n_joints, 3))
        for t in range(n_frames):
            out[t, 0] = root_pos[t]
            for chain in chains:
                rot = quats[t, 0]
                for k in range(1, len(chain)):
                    rot = qmul(rot, quats[t, chain[k]])
                    out[t, chain[k]] = qrot(rot, offsets[chain[k]]) + out[t, chain[k - 1]]
        return out

    # 1. retarget
    src_off = (
        raw
        * np.concatenate([[0.0], np.linalg.norm(joints[0, 1:] - joints[0, parents[1:]], axis=-1)])[:, None]
    )
    tgt_off = spec.target_offsets
    l1, l2 = spec.l_idx
    scale = (np.abs(tgt_off[l1]).max() + np.abs(tgt_off[l2]).max()) / (
        np.abs(src_off[l1]).max() + np.abs(src_off[l2]).max()
    )
    pos = fk(ik(joints, smooth=False), joints[:, 0] * scale, tgt_off)
    # 2-4. floor, origin, face +Z
    pos[:, :, 1] -= pos[:, :, 1].min()
    pos = pos - pos[0, 0] * np.array([1.0, 0.0, 1.0])
    r_hip, l_hip, r_sdr, l_sdr = spec.face_joint_indx
    across = (pos[0, r_hip] - pos[0, l_hip]) + (pos[0, r_sdr] - pos[0, l_sdr])
    forward = np.cross(up, across / np.linalg.norm(across))
    face = qbetween(forward / np.linalg.norm(forward), z_axis)
    g = np.array([[qrot(face, p) for p in frame] for frame in pos])
    # 6. IK with smoothing
    quats = ik(g, smooth=True)
    r_rot = quats[:, 0]
    rows = []
    feet = list(spec.fid_l) + list(spec.fid_r)
    for t in range(n_frames - 1):
        dq = qmul(r_rot[t + 1], qinv(r_rot[t]))
        vel = qrot(r_rot[t + 1], g[t + 1, 0] - g[t, 0])
        rel = g[t] - g[t, 0] * np.array([1.0, 0.0, 1.0])
        ric = np.array([qrot(r_rot[t], p) for p in rel[1:]])
        rot6 = np.array([quat_to_cont6d(q) for q in quats[t, 1:]])
        lvel = np.array([qrot(r_rot[t], g[t + 1, j] - g[t, j]) for j in range(n_joints)])
        contact = [float(np.sum((g[t + 1, j] - g[t, j]) ** 2) < feet_threshold) for j in feet]
        rows.append(
            np.concatenate(
                [
                    [np.arcsin(dq[2])],
                    vel[[0, 2]],
                    [g[t, 0, 1]],
                    ric.ravel(),
                    rot6.ravel(),
                    lvel.ravel(),
                    contact,
                ]
            )
        )
    return np.array(rows, dtype=np.float32)


def main() -> int:
    cfg = parse_cli(BenchConfig)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(cfg.threads)
    import numpy as np
    import torch

    from data.motion_fixtures import synthetic_motion
    from data.motion_repr import joints_to_features, joints_to_features_batch, recover_from_ric
    from data.specs import get_dataset_spec

    torch.set_num_threads(cfg.threads)
    spec = get_dataset_spec(cfg.dataset)
    unit = 1.0 / spec.metres_per_unit
    rng = np.random.default_rng(cfg.seed)
    seqs = [synthetic_motion(cfg.frames, spec, rng) for _ in range(cfg.num_seqs)]
    print(f"dataset={spec.name} sequences={cfg.num_seqs} frames={cfg.frames} threads={cfg.threads}")

    def timed(fn):
        start = time.perf_counter()
        out = fn()
        return out, time.perf_counter() - start

    nb = min(cfg.baseline_seqs, cfg.num_seqs)
    base, t_base = timed(lambda: [_reference_features(s, spec, spec.feet_threshold) for s in seqs[:nb]])
    ours, t_single = timed(lambda: [joints_to_features(s, spec) for s in seqs])
    stacked = np.stack(seqs)
    batched, t_batch = timed(
        lambda: np.concatenate(
            [
                joints_to_features_batch(stacked[i : i + cfg.batch_size], spec)
                for i in range(0, len(seqs), cfg.batch_size)
            ]
        )
    )

    rot = spec.feature_slices["rot"]
    keep = np.r_[0 : rot.start, rot.stop : spec.feat_dim]
    err = max(float(np.abs(b[:, keep] - o[:, keep]).max()) for b, o in zip(base, ours, strict=False)) / unit
    err_rot = max(float(np.abs(b[:, rot] - o[:, rot]).max()) for b, o in zip(base, ours, strict=False))
    err_batch = float(np.abs(batched - np.stack(ours)).max()) / unit

    feats = np.stack(ours)
    _, t_rec = timed(lambda: [recover_from_ric(f, spec.joints_num) for f in feats])
    _, t_rec_batch = timed(lambda: recover_from_ric(feats, spec.joints_num))
    feats_t = torch.from_numpy(feats)
    _, t_rec_torch = timed(lambda: recover_from_ric(feats_t, spec.joints_num))

    def report(name, seconds, count):
        per = seconds / count
        print(
            f"{name:<44s} {count / seconds:9.1f} seq/s {per * 1e3:8.3f} ms/seq  "
            f"corpus {cfg.corpus_clips * per:7.1f} s (1 core) {cfg.corpus_clips * per / 2:7.1f} s (2 procs)"
        )
        return per

    per_base = report("baseline per-frame loop (joints->features)", t_base, nb)
    per_single = report("joints_to_features (per sequence)", t_single, cfg.num_seqs)
    per_batch = report(f"joints_to_features_batch (groups of {cfg.batch_size})", t_batch, cfg.num_seqs)
    report("recover_from_ric numpy (per sequence)", t_rec, cfg.num_seqs)
    report(f"recover_from_ric numpy (one batch of {cfg.num_seqs})", t_rec_batch, cfg.num_seqs)
    report(f"recover_from_ric torch (one batch of {cfg.num_seqs})", t_rec_torch, cfg.num_seqs)
    print(
        f"speed-up vs baseline: per sequence {per_base / per_single:.1f}x, batched {per_base / per_batch:.1f}x"
    )
    print(f"RATIO motion_repr_batched_vs_loop {per_base / per_batch:.3f}")
    print(
        f"max |ours - baseline| over {nb} seqs: {err:.2e} m (non-rotation blocks), {err_rot:.2e} (6D block); "
        f"batched vs single {err_batch:.2e} m"
    )
    ok = err <= cfg.tolerance and err_rot <= cfg.tolerance * 10 and err_batch <= cfg.tolerance
    if not ok:
        print("FAIL: results differ from the baseline beyond tolerance", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
