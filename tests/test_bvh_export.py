"""BVH export: files read back through bvhio (and an independent parser) reproduce the joints."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from data.bvh_export import (
    BvhPose,
    fit_skeleton,
    forward_kinematics,
    kabsch,
    motion_to_bvh,
    read_bvh,
    shortest_arc,
    solve_pose,
    write_bvh,
)
from data.layout import DatasetPaths
from data.motion_fixtures import synthetic_motion
from data.motion_repr import joints_to_features, recover_from_ric
from data.run_folder import RunFolderError
from data.specs import get_dataset_spec
from data.synth.build import make_motion
from eval.export_bvh import main as export_main

DATASETS = ("humanml3d", "kit")
READ_BACK_TOL_M = 1e-5
"""Numbers are written with 6 decimals and bvhio computes in float32: 1e-6 m measured, 1e-5 allowed."""


def _synthml(dataset: str) -> np.ndarray:
    return make_motion(seed=3, index=5, dataset=dataset)["joints"]


def _error_m(read: np.ndarray, joints: np.ndarray, dataset: str) -> float:
    """Largest joint distance in metres between a file's joints (metres) and dataset-unit joints."""
    return float(np.linalg.norm(read - joints * get_dataset_spec(dataset).metres_per_unit, axis=-1).max())


# ----------------------------------------------------------------------------------------------
# Rotation helpers
# ----------------------------------------------------------------------------------------------


def test_shortest_arc_hand_values():
    # x onto y: +90 degrees about z
    np.testing.assert_allclose(shortest_arc(np.array([1.0, 0, 0]), np.array([0, 2.0, 0])),
                               [[0, -1, 0], [1, 0, 0], [0, 0, 1]], atol=1e-12)  # fmt: skip
    # opposite directions: a proper rotation (det 1) by pi that maps a onto -a
    rot = shortest_arc(np.array([0, -1.0, 0]), np.array([0, 1.0, 0]))
    np.testing.assert_allclose(rot @ [0, -1.0, 0], [0, 1.0, 0], atol=1e-12)
    assert np.linalg.det(rot) == pytest.approx(1.0)
    # a zero target leaves the bone where it is
    np.testing.assert_allclose(shortest_arc(np.array([0, 0, 1.0]), np.zeros(3)), np.eye(3))
    # batch: the rotation maps a onto b's direction and keeps the axis a x b fixed
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(50, 3)), rng.normal(size=(50, 3))
    rots = shortest_arc(a, b)
    mapped = np.einsum("nij,nj->ni", rots, a / np.linalg.norm(a, axis=1, keepdims=True))
    np.testing.assert_allclose(mapped, b / np.linalg.norm(b, axis=1, keepdims=True), atol=1e-12)
    axis = np.cross(a, b)
    np.testing.assert_allclose(np.einsum("nij,nj->ni", rots, axis), axis, atol=1e-12)


def test_kabsch_recovers_a_rotation_and_is_never_a_reflection():
    rng = np.random.default_rng(1)
    truth = Rotation.random(8, random_state=2).as_matrix()
    source = rng.normal(size=(3, 3))
    target = np.einsum("tij,kj->tki", truth, source)
    np.testing.assert_allclose(kabsch(source, target), truth, atol=1e-10)
    # mirrored target: the best proper rotation, not the mirror
    assert np.linalg.det(kabsch(source, source * [-1.0, 1.0, 1.0])) == pytest.approx(1.0)


# ----------------------------------------------------------------------------------------------
# Round trips
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dataset", DATASETS)
@pytest.mark.parametrize("source", ["synthml", "synthml_features", "fixture"])
def test_bvh_reads_back_the_joints(tmp_path: Path, dataset: str, source: str):
    spec = get_dataset_spec(dataset)
    if source == "fixture":
        joints = synthetic_motion(40, dataset, rng=np.random.default_rng(4))
    else:
        joints = _synthml(dataset)
        if source == "synthml_features":  # the path of a dataset / reconstructed / generated motion
            joints = recover_from_ric(joints_to_features(joints, dataset), spec.joints_num)
    path = tmp_path / "motion.bvh"
    export = write_bvh(joints, path, dataset)
    back = read_bvh(path)
    assert sorted(back.names) == sorted(spec.joint_names) and back.joints.shape == joints.shape
    assert back.frame_time == pytest.approx(1.0 / spec.fps)  # 0.05 s HumanML3D, 0.08 s KIT
    assert export.max_error < 1e-6  # rigid bones: the inverse kinematics is exact
    assert _error_m(back.reorder(spec.joint_names), joints, dataset) < READ_BACK_TOL_M


@pytest.mark.parametrize("dataset", DATASETS)
def test_file_follows_the_bvh_convention(tmp_path: Path, dataset: str):
    """An independent reader (intrinsic Euler angles in channel order, as Blender reads them) agrees."""
    spec = get_dataset_spec(dataset)
    joints = _synthml(dataset)
    text = motion_to_bvh(joints, dataset).text
    header, motion = text.split("MOTION")
    names, depth, offsets, channels = [], [], [], []
    for line in header.splitlines():
        tok = line.split()
        if tok[0] in ("ROOT", "JOINT"):
            names.append(tok[1])
            depth.append((len(line) - len(line.lstrip())) // 2)
        elif tok[0] == "OFFSET" and len(offsets) < len(names):  # not an End Site's
            offsets.append([float(x) for x in tok[1:]])
        elif tok[0] == "CHANNELS":
            channels.append(tok[2:])
    # a joint's parent is the closest earlier joint one level up
    parents = [-1] + [max(k for k in range(j) if depth[k] == depth[j] - 1) for j in range(1, len(names))]
    rows = motion.split("Frame Time:")[1].splitlines()[1:]
    frames = np.array([[float(x) for x in row.split()] for row in rows if row.strip()])
    assert sorted(names) == sorted(spec.joint_names) and frames.shape[0] == len(joints)
    col, world, pos = 0, {}, np.zeros((len(frames), len(names), 3))
    for j, chans in enumerate(channels):
        vals = frames[:, col : col + len(chans)]
        col += len(chans)
        local_pos = np.broadcast_to(offsets[j], (len(frames), 3)).copy()
        rot_axes, rot_vals = "", []
        for c, v in zip(chans, vals.T, strict=True):
            if c.endswith("position"):
                local_pos[:, "XYZ".index(c[0])] = v
            else:
                rot_axes += c[0]
                rot_vals.append(v)
        local = Rotation.from_euler(rot_axes, np.stack(rot_vals, -1), degrees=True).as_matrix()
        p = parents[j]
        if p < 0:
            world[j], pos[:, j] = local, local_pos
        else:
            pos[:, j] = pos[:, p] + np.einsum("tij,tj->ti", world[p], local_pos)
            world[j] = world[p] @ local
    order = [names.index(n) for n in spec.joint_names]
    assert _error_m(pos[:, order], joints, dataset) < READ_BACK_TOL_M


@pytest.mark.parametrize("dataset", DATASETS)
def test_drifting_bone_lengths(tmp_path: Path, dataset: str):
    """Decoded motions stretch bones: rotations alone miss by the stretch, joint positions fix it."""
    spec = get_dataset_spec(dataset)
    joints = _synthml(dataset)
    unit = 1.0 / spec.metres_per_unit
    noisy = joints + np.random.default_rng(7).normal(0, 0.005 * unit, joints.shape)  # 5 mm per joint
    rigid = write_bvh(noisy, tmp_path / "rigid.bvh", dataset)
    read = read_bvh(tmp_path / "rigid.bvh").reorder(spec.joint_names)
    error = _error_m(read, noisy, dataset)
    # bvhio's reading agrees with the error the export measured with its own forward kinematics ...
    assert error == pytest.approx(rigid.max_error, abs=READ_BACK_TOL_M)
    # ... which is the bone stretch: centimetres, not decimetres (aiming from the placed parent
    # keeps errors from adding up along a chain)
    assert 0.005 < error < 0.06
    exact = write_bvh(noisy, tmp_path / "exact.bvh", dataset, joint_positions=True)
    assert exact.max_error < 1e-9
    assert (
        _error_m(read_bvh(tmp_path / "exact.bvh").reorder(spec.joint_names), noisy, dataset) < READ_BACK_TOL_M
    )


def test_skeleton_uses_the_motions_bone_lengths_and_the_spec_rest_directions():
    spec = get_dataset_spec("humanml3d")
    joints = _synthml("humanml3d")
    skeleton = fit_skeleton(joints, spec)
    lengths = np.linalg.norm(joints[0, 1:] - joints[0, spec.parents[1:]], axis=-1)
    np.testing.assert_allclose(np.linalg.norm(skeleton.offsets[1:], axis=-1), lengths, rtol=1e-6)
    # left knee -> left ankle (7) has one parent with one child: the spec's direction, straight down
    np.testing.assert_allclose(skeleton.offsets[7] / lengths[6], [0, -1, 0], atol=1e-12)
    # below the pelvis the fitted layout keeps the left hip on +x, the right on -x, the spine up
    assert skeleton.offsets[1, 0] > 0 > skeleton.offsets[2, 0] and skeleton.offsets[3, 1] > 0
    # the leaves (feet, head, wrists) end in End Sites along their bone
    leaves = [j for j, kids in enumerate(skeleton.children) if not kids]
    assert sorted(leaves) == [10, 11, 15, 20, 21]
    assert np.all(np.linalg.norm(skeleton.end_sites[leaves], axis=-1) > 0)
    # numpy forward kinematics of the solved pose gives the joints back
    pose = solve_pose(joints, skeleton, spec)
    assert isinstance(pose, BvhPose) and pose.local_positions is None
    np.testing.assert_allclose(forward_kinematics(skeleton, pose), joints, atol=1e-6)


@pytest.mark.parametrize(
    ("shape", "dataset", "expected"),
    [
        ((10, 263), "humanml3d", r"expected \(T, 22, 3\).*recover_from_ric"),
        ((10, 21, 3), "humanml3d", r"expected \(T, 22, 3\)"),
        ((10, 22, 3), "kit", r"expected \(T, 21, 3\)"),
        ((0, 22, 3), "humanml3d", "0 frames"),
    ],
)
def test_wrong_shapes_are_refused(tmp_path: Path, shape, dataset, expected):
    with pytest.raises(ValueError, match=expected):
        write_bvh(np.zeros(shape), tmp_path / "x.bvh", dataset)
    assert not (tmp_path / "x.bvh").exists()


def test_nan_and_unreadable_files(tmp_path: Path):
    joints = _synthml("humanml3d")
    joints[3, 4, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        motion_to_bvh(joints, "humanml3d")
    with pytest.raises(FileNotFoundError, match="missing.bvh"):
        read_bvh(tmp_path / "missing.bvh")
    (tmp_path / "bad.bvh").write_text("HIERARCHY\nJOINT x\n")
    with pytest.raises(ValueError, match="bad.bvh: not a readable BVH"):
        read_bvh(tmp_path / "bad.bvh")


# ----------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------


def test_cli_exports_npy_files_and_dataset_motions(tmp_path: Path):
    spec = get_dataset_spec("kit")
    joints = _synthml("kit")
    feats = joints_to_features(joints, "kit")
    np.save(tmp_path / "feats.npy", feats)
    np.save(tmp_path / "joints.npy", joints.astype(np.float32))
    out = tmp_path / "out"
    written = export_main(["--dataset", "kit", "--npy", str(tmp_path / "feats.npy"), str(tmp_path / "joints.npy"),
                           "--out", str(out)])  # fmt: skip
    assert [p.name for p in written] == ["feats.bvh", "joints.bvh"]
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "export.json", "feats.bvh", "joints.bvh",
                                                    "run.json", "run_info.json"]  # fmt: skip
    summary = json.loads((out / "export.json").read_text())
    assert [f["file"] for f in summary["files"]] == ["feats.bvh", "joints.bvh"]
    assert all(f["max_error_m"] < 1e-5 and f["frame_time"] == 0.08 for f in summary["files"])
    back = read_bvh(out / "feats.bvh").reorder(spec.joint_names)
    assert _error_m(back, recover_from_ric(feats, spec.joints_num), "kit") < READ_BACK_TOL_M

    # dataset mode: <id>.bvh per motion of the split
    root = tmp_path / "ds"
    paths = DatasetPaths(root)
    paths.joints_dir.mkdir(parents=True)
    for k, motion_id in enumerate(["000001", "000002"]):
        np.save(
            paths.joint_file(motion_id),
            make_motion(seed=1, index=k, dataset="kit")["joints"].astype(np.float32),
        )
    paths.split_file("test").write_text("000001\n000002\n")
    ds_out = tmp_path / "ds_out"
    written = export_main(
        ["--dataset", "kit", "--dataset-root", str(root), "--num", "2", "--out", str(ds_out)]
    )
    assert [p.name for p in written] == ["000001.bvh", "000002.bvh"]

    # it never writes into a folder that holds files it did not write
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(RunFolderError, match="--overwrite"):
        export_main(["--dataset", "kit", "--npy", str(tmp_path / "joints.npy"), "--out", str(foreign)])
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]
    with pytest.raises(
        SystemExit, match=r"feats: motion of shape \(\d+, 251\) is neither joints \(T, 22, 3\)"
    ):
        export_main(
            ["--npy", str(tmp_path / "feats.npy"), "--out", str(tmp_path / "wrong")]
        )  # KIT file, HumanML3D
