"""Motion representation (spec 1.1-1.6): quaternions, joints <-> features round trip, quirks."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from data.motion_fixtures import rest_pose, synthetic_motion
from data.motion_repr import (
    canonicalize_joints,
    foot_contacts,
    joints_to_features,
    joints_to_features_batch,
    offsets_from_pose,
    recover_from_ric,
    recover_from_rot,
    recover_root_rot_pos,
)
from data.quaternion import (
    cont6d_to_matrix,
    qbetween,
    qinv,
    qmul,
    qrot,
    quat_to_cont6d,
    quat_to_matrix,
    yaw_quat,
)
from data.specs import get_dataset_spec

DATASETS = ("humanml3d", "kit")


def _unit(spec) -> float:
    return 1.0 / spec.metres_per_unit


# ------------------------------------------------------------------------------------- quaternions


def test_quaternion_basics():
    rng = np.random.default_rng(0)
    q = rng.normal(size=(5, 4))
    q /= np.linalg.norm(q, axis=-1, keepdims=True)
    r = rng.normal(size=(5, 4))
    r /= np.linalg.norm(r, axis=-1, keepdims=True)
    v = rng.normal(size=(5, 3))
    # Composition: (q ⊗ r) v = q (r v); inverse undoes; matrix agrees with qrot.
    np.testing.assert_allclose(qrot(qmul(q, r), v), qrot(q, qrot(r, v)), atol=1e-12)
    np.testing.assert_allclose(qrot(qinv(q), qrot(q, v)), v, atol=1e-12)
    np.testing.assert_allclose((quat_to_matrix(q) @ v[..., None])[..., 0], qrot(q, v), atol=1e-12)
    # cont6d = first two columns; back to the same matrix.
    m = quat_to_matrix(q)
    c6 = quat_to_cont6d(q)
    np.testing.assert_allclose(c6, np.concatenate([m[..., :, 0], m[..., :, 1]], -1), atol=1e-12)
    np.testing.assert_allclose(cont6d_to_matrix(c6), m, atol=1e-12)
    # Hamilton convention on basis quaternions: i ⊗ j = k.
    i, j, k = np.eye(4)[1], np.eye(4)[2], np.eye(4)[3]
    np.testing.assert_allclose(qmul(i, j), k)


def test_qbetween_maps_a_onto_b():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(50, 3)), rng.normal(size=(50, 3))
    q = qbetween(a, b)
    np.testing.assert_allclose(np.linalg.norm(q, axis=-1), 1.0, atol=1e-12)
    bn = b / np.linalg.norm(b, axis=-1, keepdims=True)
    an = a / np.linalg.norm(a, axis=-1, keepdims=True)
    np.testing.assert_allclose(qrot(q, an), bn, atol=1e-12)
    # Broadcasting (3,) against (50, 3), and the antiparallel case gives a valid half turn.
    np.testing.assert_allclose(
        qrot(qbetween(np.array([0.0, 0, 1]), bn), np.array([0.0, 0, 1])), bn, atol=1e-12
    )
    flip = qbetween(np.array([[0.0, -1.0, 0.0]]), np.array([[0.0, 2.0, 0.0]]))
    np.testing.assert_allclose(qrot(flip, np.array([[0.0, -1.0, 0.0]])), [[0.0, 1.0, 0.0]], atol=1e-12)


def test_yaw_quaternion_maps_z_to_sin_cos():
    theta = np.array([0.3, -1.2, 2.5])
    q = yaw_quat(theta)
    z = np.broadcast_to([0.0, 0.0, 1.0], (3, 3))
    expected = np.stack([np.sin(theta), 0 * theta, np.cos(theta)], -1)
    np.testing.assert_allclose(qrot(q, z), expected, atol=1e-12)
    np.testing.assert_allclose(q, np.stack([np.cos(theta / 2), 0 * theta, np.sin(theta / 2), 0 * theta], -1))


def test_quaternion_ops_accept_torch():
    rng = np.random.default_rng(2)
    q = rng.normal(size=(4, 4))
    v = rng.normal(size=(4, 3))
    out = qrot(torch.from_numpy(q / np.linalg.norm(q, axis=-1, keepdims=True)), torch.from_numpy(v))
    assert isinstance(out, torch.Tensor)
    np.testing.assert_allclose(
        out.numpy(), qrot(q / np.linalg.norm(q, axis=-1, keepdims=True), v), atol=1e-12
    )


# --------------------------------------------------------------------------------- round trip


@pytest.mark.parametrize("dataset", DATASETS)
def test_round_trip_recover_from_ric(dataset):
    spec = get_dataset_spec(dataset)
    joints = synthetic_motion(60, dataset, np.random.default_rng(3))
    feats = joints_to_features(joints, dataset)
    assert feats.shape == (59, spec.feat_dim) and feats.dtype == np.float32
    canon = canonicalize_joints(joints, dataset)
    rec = recover_from_ric(feats, spec.joints_num)
    assert rec.shape == (59, spec.joints_num, 3)
    # float32 storage of positions in metres (KIT: millimetres) -> relative tolerance ~1e-6.
    np.testing.assert_allclose(rec, canon[:-1], atol=1e-4 * _unit(spec))
    # Canonical frame: on the floor, frame-0 root at the XZ origin, bones at target lengths.
    assert abs(canon[..., 1].min()) < 1e-6 * _unit(spec)
    np.testing.assert_allclose(canon[0, 0, [0, 2]], 0.0, atol=1e-6 * _unit(spec))
    lengths = np.linalg.norm(canon[:, 1:] - canon[:, spec.parents[1:]], axis=-1)
    np.testing.assert_allclose(lengths, np.broadcast_to(spec.target_bone_lengths, lengths.shape), rtol=1e-5)
    # Source bones differ from the target, so retargeting really changed the skeleton.
    src = np.linalg.norm(joints[:, 1:] - joints[:, spec.parents[1:]], axis=-1)
    assert np.abs(src / np.asarray(spec.target_bone_lengths) - 1).max() > 0.05


@pytest.mark.parametrize("dataset", DATASETS)
def test_faces_plus_z_in_frame_zero(dataset):
    spec = get_dataset_spec(dataset)
    canon = canonicalize_joints(synthetic_motion(30, dataset, np.random.default_rng(4)), dataset)
    r_hip, l_hip, r_sdr, l_sdr = spec.face_joint_indx
    across = canon[0, r_hip] - canon[0, l_hip] + canon[0, r_sdr] - canon[0, l_sdr]
    forward = np.cross([0.0, 1.0, 0.0], across)
    np.testing.assert_allclose(forward / np.linalg.norm(forward), [0, 0, 1], atol=1e-5)


def test_target_joints_define_skeleton():
    spec = get_dataset_spec("humanml3d")
    rng = np.random.default_rng(5)
    target = rest_pose(spec.target_offsets * rng.uniform(0.8, 1.3, size=(spec.joints_num, 1)), spec)
    joints = synthetic_motion(40, spec, rng)
    canon = canonicalize_joints(joints, spec, target_joints=target)
    lengths = np.linalg.norm(canon[:, 1:] - canon[:, spec.parents[1:]], axis=-1)
    tgt = np.linalg.norm(target[1:] - target[spec.parents[1:]], axis=-1)
    np.testing.assert_allclose(lengths, np.broadcast_to(tgt, lengths.shape), rtol=1e-5)
    rec = recover_from_ric(joints_to_features(joints, spec, target_joints=target), spec.joints_num)
    np.testing.assert_allclose(rec, canon[:-1], atol=1e-4)
    # 6D FK with the same target skeleton reproduces the joints.
    feats = joints_to_features(joints, spec, target_joints=target).astype(np.float64)
    fk = recover_from_rot(feats, spec.joints_num, offsets_from_pose(target, spec))
    np.testing.assert_allclose(fk, canon[:-1], atol=1e-4)


@pytest.mark.parametrize("dataset", DATASETS)
def test_6d_fk_matches_ric(dataset):
    spec = get_dataset_spec(dataset)
    feats = joints_to_features(synthetic_motion(50, dataset, np.random.default_rng(6)), dataset)
    ric = recover_from_ric(feats.astype(np.float64), spec.joints_num)
    fk = recover_from_rot(feats.astype(np.float64), spec.joints_num)
    np.testing.assert_allclose(fk, ric, atol=1e-5 * _unit(spec))


def test_features_invariant_to_yaw_and_translation():
    spec = get_dataset_spec("humanml3d")
    joints = synthetic_motion(60, spec, np.random.default_rng(7))
    feats = joints_to_features(joints, spec)
    rot = quat_to_matrix(yaw_quat(np.array(1.1)))
    moved = joints @ rot.T + np.array([3.0, 0.7, -2.0])
    np.testing.assert_allclose(joints_to_features(moved, spec), feats, atol=2e-5)
    np.testing.assert_allclose(canonicalize_joints(moved, spec), canonicalize_joints(joints, spec), atol=2e-5)


def test_feature_blocks_semantics():
    """Hand-checkable quantities on a straight walk along +X (so facing is +X, not +Z)."""
    spec = get_dataset_spec("humanml3d")
    sl = spec.feature_slices
    pose = rest_pose(spec.target_offsets, spec)  # faces +Z, target skeleton
    turn = quat_to_matrix(yaw_quat(np.array(np.pi / 2)))  # +Z -> +X
    t = 30
    joints = np.repeat((pose @ turn.T)[None], t, axis=0)
    joints[:, :, 0] += 0.05 * np.arange(t)[:, None]  # 5 cm per frame along the facing direction
    feats = joints_to_features(joints, spec)
    # After canonicalisation the walk goes along +Z: root velocity (0, 0.05) in the facing frame.
    np.testing.assert_allclose(
        feats[:, sl["root_linear_velocity"]], np.tile([0.0, 0.05], (t - 1, 1)), atol=1e-6
    )
    np.testing.assert_allclose(feats[:, sl["root_rot_velocity"]], 0.0, atol=1e-7)
    # Root height = pelvis above the lowest joint of the rest pose.
    np.testing.assert_allclose(feats[:, sl["root_y"]], pose[0, 1] - pose[:, 1].min(), atol=1e-6)
    lv = feats[:, sl["local_velocity"]].reshape(t - 1, spec.joints_num, 3)
    np.testing.assert_allclose(lv, np.broadcast_to([0.0, 0.0, 0.05], lv.shape), atol=1e-6)
    # Static pose moving slower than sqrt(0.002) = 4.5 cm/frame? No: 5 cm -> 0.0025 >= 0.002 -> no contact.
    np.testing.assert_array_equal(feats[:, sl["foot_contact"]], 0.0)


def test_root_rotation_velocity_is_half_yaw_increment():
    spec = get_dataset_spec("humanml3d")
    pose = rest_pose(spec.target_offsets, spec)
    t = 200
    rate = 0.02  # rad per frame, slow enough that smoothing leaves the middle rate unchanged
    yaw = rate * np.arange(t)
    mats = quat_to_matrix(yaw_quat(yaw))
    joints = np.einsum("tij,kj->tki", mats, pose)
    feats = joints_to_features(joints, spec)
    # Facing turns by +rate per frame; world->facing rotation turns by -rate; stored half angle.
    np.testing.assert_allclose(feats[90:110, 0], -rate / 2, atol=1e-6)
    r_rot, _ = recover_root_rot_pos(feats)
    np.testing.assert_allclose(r_rot[0], [1, 0, 0, 0])


def test_turning_past_180_degrees_published_glitch_and_continuous_yaw():
    spec = get_dataset_spec("humanml3d")
    pose = rest_pose(spec.target_offsets, spec)
    t, rate = 120, 0.05  # 6 rad of turning: the facing crosses ±180° once
    yaw = rate * np.arange(t)
    mats = quat_to_matrix(yaw_quat(yaw))
    heading = np.stack([np.sin(yaw), 0 * yaw, np.cos(yaw)], -1)
    joints = np.einsum("tij,kj->tki", mats, pose) + np.cumsum(0.03 * heading, axis=0)[:, None]
    published = joints_to_features(joints, spec)
    fixed = joints_to_features(joints, spec, continuous_yaw=True)
    canon = canonicalize_joints(joints, spec)
    # Exact round trip with continuous_yaw, for any amount of turning.
    np.testing.assert_allclose(recover_from_ric(fixed, spec.joints_num), canon[:-1], atol=1e-4)
    # The published formula differs in one scalar (sign flipped) on the crossing frame only...
    diff = np.nonzero(published != fixed)
    assert diff[1].tolist() == [0] and len(diff[0]) == 1
    row = diff[0][0]
    assert published[row, 0] == pytest.approx(-fixed[row, 0]) and abs(fixed[row, 0]) > 0.01
    # ...and its recovery turns the rest of the clip by twice that increment.
    err = np.abs(recover_from_ric(published, spec.joints_num) - canon[:-1]).max(axis=(1, 2))
    assert err[: row + 1].max() < 1e-4 and err[-1] > 1e-2


# ------------------------------------------------------------------------------------ contacts


def test_foot_contacts_threshold_exact():
    spec = get_dataset_spec("humanml3d")
    pos = np.zeros((4, spec.joints_num, 3))
    left_ankle = spec.fid_l[0]
    pos[1, left_ankle, 0] = 0.5  # squared displacement exactly 0.25 (not < 0.25) -> 0
    pos[2, left_ankle, 0] = 0.5  # held still -> 1
    pos[3, left_ankle, 0] = 0.5 + 0.4375  # 0.19140625 < 0.25 -> 1
    c = foot_contacts(pos, spec, feet_threshold=0.25)
    assert c.shape == (3, 4) and c.dtype == np.float32
    np.testing.assert_array_equal(c[:, 0], [0.0, 1.0, 1.0])
    np.testing.assert_array_equal(c[:, 1:], 1.0)  # other feet never move


@pytest.mark.parametrize("dataset", DATASETS)
def test_contacts_still_then_fast(dataset):
    spec = get_dataset_spec(dataset)
    sl = spec.feature_slices
    pose = rest_pose(spec.target_offsets, spec)
    t = 20
    joints = np.repeat(pose[None], t, axis=0)
    # Frames 0..9 still, then the whole body moves 30 cm per frame (no height test: feet "fly").
    shift = np.maximum(np.arange(t) - 9, 0) * 0.3 * _unit(spec)
    joints[:, :, 2] += shift[:, None]
    joints[:, :, 1] += 0.5 * shift[:, None]
    contacts = joints_to_features(joints, dataset)[:, sl["foot_contact"]]
    np.testing.assert_array_equal(contacts[:9], 1.0)
    np.testing.assert_array_equal(contacts[9:], 0.0)
    # Threshold override: a huge threshold makes every frame a contact.
    huge = joints_to_features(joints, dataset, feet_threshold=1e12)[:, sl["foot_contact"]]
    np.testing.assert_array_equal(huge, 1.0)
    # Contact order is left pair then right pair: only the right toe circles about its ankle.
    toe, ankle = spec.fid_r[1], spec.fid_r[0]
    radius = np.linalg.norm(pose[toe] - pose[ankle])
    phi = 1.5 * np.maximum(np.arange(t) - 9, 0)
    one_foot = np.repeat(pose[None], t, axis=0)
    one_foot[:, toe] = pose[ankle] + radius * np.stack([np.sin(phi), 0 * phi, np.cos(phi)], -1)
    c = joints_to_features(one_foot, dataset)[:, sl["foot_contact"]]
    np.testing.assert_array_equal(c[:9], 1.0)
    np.testing.assert_array_equal(c[9:, 3], 0.0)
    np.testing.assert_array_equal(c[:, :3], 1.0)


# ------------------------------------------------------------------------- numpy / torch / batch


def test_recover_numpy_torch_batch_and_no_mutation():
    spec = get_dataset_spec("humanml3d")
    rng = np.random.default_rng(8)
    feats = np.stack([joints_to_features(synthetic_motion(40, spec, rng), spec) for _ in range(3)])
    before = feats.copy()
    ref = recover_from_ric(feats, spec.joints_num)
    assert ref.shape == (3, 39, spec.joints_num, 3) and isinstance(ref, np.ndarray)
    np.testing.assert_array_equal(feats, before)
    # Per-sequence equals batched; extra leading dims work.
    np.testing.assert_allclose(recover_from_ric(feats[1], spec.joints_num), ref[1], atol=1e-6)
    np.testing.assert_allclose(recover_from_ric(feats[None], spec.joints_num)[0], ref, atol=1e-6)
    # Torch: same numbers, tensor out, same dtype, differentiable, input untouched.
    tensor = torch.from_numpy(feats.copy()).requires_grad_(True)
    out = recover_from_ric(tensor, spec.joints_num)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    np.testing.assert_allclose(out.detach().numpy(), ref, atol=1e-5)
    out.square().sum().backward()
    assert tensor.grad is not None and torch.isfinite(tensor.grad).all()
    np.testing.assert_array_equal(tensor.detach().numpy(), before)
    fk_t = recover_from_rot(torch.from_numpy(feats).double(), spec.joints_num)
    np.testing.assert_allclose(
        fk_t.numpy(), recover_from_rot(feats.astype(np.float64), spec.joints_num), atol=1e-9
    )


def test_joints_to_features_batch_matches_single_and_accepts_torch():
    spec = get_dataset_spec("kit")
    rng = np.random.default_rng(9)
    seqs = [synthetic_motion(n, spec, rng) for n in (30, 25, 30)]
    copies = [s.copy() for s in seqs]
    single = [joints_to_features(s, spec) for s in seqs]
    listed = joints_to_features_batch(seqs, spec)
    for a, b in zip(single, listed, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5 * _unit(spec))
    stacked = joints_to_features_batch(np.stack([seqs[0], seqs[2]]), spec)
    np.testing.assert_allclose(stacked[1], single[2], atol=1e-5 * _unit(spec))
    for s, c in zip(seqs, copies, strict=True):
        np.testing.assert_array_equal(s, c)
    np.testing.assert_allclose(joints_to_features(torch.from_numpy(seqs[0]), spec), single[0], atol=1e-6)


# --------------------------------------------------------------------------------------- errors


def test_errors_are_clear():
    spec = get_dataset_spec("humanml3d")
    joints = synthetic_motion(10, spec)
    with pytest.raises(ValueError, match=r"expected shape \(T>=2, 21, 3\).*'kit'.*got \(10, 22, 3\)"):
        joints_to_features(joints, "kit")
    with pytest.raises(ValueError, match="T>=2"):
        joints_to_features(joints[:1], spec)
    bad = joints.copy()
    bad[4, 3, 1] = np.nan
    with pytest.raises(ValueError, match=r"NaN/inf in 1 frame\(s\), first \[4\]"):
        joints_to_features(bad, spec)
    with pytest.raises(ValueError, match=r"target_joints: expected shape \(22, 3\)"):
        joints_to_features(joints, spec, target_joints=np.zeros((21, 3)))
    with pytest.raises(ValueError, match=r"\(\.\.\., T, 263\) for joints_num=22, got \(9, 251\)"):
        recover_from_ric(np.zeros((9, 251), np.float32), 22)
    collapsed = joints.copy()
    collapsed[:, 4] = collapsed[:, 1]
    with pytest.raises(ValueError, match="zero-length bone"):
        joints_to_features(collapsed, spec)


# ------------------------------------------------------------------------------------ real data


@pytest.mark.real_data
def test_real_humanml3d_sample_clip():
    """Spec section 9 acceptance checks on clip 012314 (needs HUMANML3D_ROOT)."""
    root = os.environ.get("HUMANML3D_ROOT")
    if not root or not (Path(root) / "new_joint_vecs" / "012314.npy").is_file():
        pytest.skip("set HUMANML3D_ROOT to a HumanML3D folder with new_joint_vecs/012314.npy")
    spec = get_dataset_spec("humanml3d")
    sl = spec.feature_slices
    vecs = np.load(Path(root) / "new_joint_vecs" / "012314.npy")
    joints = np.load(Path(root) / "new_joints" / "012314.npy")
    np.testing.assert_allclose(recover_from_ric(vecs, spec.joints_num), joints, atol=1e-5)
    # The registry's bone lengths are rounded to 0.1 mm: use the clip's own (exact target) skeleton.
    fk = recover_from_rot(vecs.astype(np.float64), spec.joints_num, offsets_from_pose(joints[0], spec))
    np.testing.assert_allclose(fk, joints, atol=1e-5)
    # The joints are already canonical and on the target skeleton: steps 1-4 are no-ops when the
    # clip's own bone lengths are the target.
    feats = joints_to_features(joints, spec, target_joints=joints[0])
    ref = vecs[:-1]
    far = slice(0, max(0, len(ref) - 90))
    np.testing.assert_array_equal(feats[:, sl["foot_contact"]], ref[:, sl["foot_contact"]])
    np.testing.assert_allclose(feats[:, sl["root_y"]], ref[:, sl["root_y"]], atol=1e-6)
    rot = sl["rot"]
    no_rot = np.r_[0 : rot.start, rot.stop : sl["foot_contact"].start]
    np.testing.assert_allclose(feats[far][:, no_rot], ref[far][:, no_rot], atol=1e-5)
    np.testing.assert_allclose(feats[far, rot], ref[far, rot], atol=1e-4)
    # Near the end the missing final input frame changes the sigma=20 facing smoothing (~1e-2).
    np.testing.assert_allclose(feats, ref, atol=5e-2)
