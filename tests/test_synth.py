"""SynthML: program schema, renderer physics and semantics, captions, file layout, determinism."""

from __future__ import annotations

import json

import numpy as np
import pytest

from data.layout import (
    DatasetPaths,
    load_features,
    load_joints,
    parse_caption_line,
    read_split,
)
from data.motion_repr import joints_to_features, recover_from_ric
from data.normalization import FeatureNorm
from data.specs import POS_TAGS, get_dataset_spec
from data.synth import build as build_module
from data.synth.body import L_WRIST, R_WRIST, Subject, sample_subject
from data.synth.build import CaptionFilter, build_synthml, make_motion, motion_program
from data.synth.captions import SPACY_TAGS, attribute_phrase, caption_program, caption_vocabulary, realize
from data.synth.program import (
    FAMILIES,
    ActionSpec,
    MotionProgram,
    ProgramError,
    all_family_attributes,
)
from data.synth.render import MAX_SECONDS, MIN_SECONDS, render_program, render_program_info
from data.synth.sampling import sample_program
from data.synth.splits import (
    MotionRecord,
    action_key,
    assign_program_splits,
    caption_key,
    overlap_figures,
    program_atoms,
    program_key,
    read_record,
    split_overlap,
)
from data.synth.writer import read_attributes

HML = get_dataset_spec("humanml3d")
KIT = get_dataset_spec("kit")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthml")
    summary = build_synthml(root, num=24, seed=3, workers=1, progress=False)
    return root, summary


def _canonical(joints: np.ndarray) -> np.ndarray:
    """Joints as the dataset stores them (retargeted, on the floor, facing +Z at frame 0)."""
    return recover_from_ric(joints_to_features(joints, continuous_yaw=True), HML.joints_num)


def _single(family: str, **attrs) -> MotionProgram:
    return MotionProgram((ActionSpec(family, **attrs),))


def _bone_lengths(j: np.ndarray, parents: np.ndarray) -> np.ndarray:
    return np.linalg.norm(j[:, 1:] - j[:, parents[1:]], axis=-1)  # (T, J-1)


# ------------------------------------------------------------------------------------------------
# Files and layout
# ------------------------------------------------------------------------------------------------


def test_layout_shapes_and_splits(built):
    root, summary = built
    paths = DatasetPaths(root)
    ids = read_split(root, "all")
    assert ids == [f"{i:06d}" for i in range(24)]
    train, val, test = (set(read_split(root, s)) for s in ("train", "val", "test"))
    # Split by program: 24 motions have too few programs whose values all recur for 80/5/15.
    assert (len(train), len(val), len(test)) == (21, 1, 2)
    assert train | val | test == set(ids) and not (train & val or train & test or val & test)
    assert set(read_split(root, "train_val")) == train | val
    norm = FeatureNorm.load(paths.mean_file, paths.std_file, HML)
    mean, std = norm.mean, norm.std
    assert mean.dtype == np.float32 and (std > 0).all()
    for name, sl in HML.feature_slices.items():
        assert np.ptp(std[sl]) == 0, name  # one std per block, the HumanML3D way
    for mid in ids:
        vecs = load_features(paths.vec_file(mid), HML)
        joints = load_joints(paths.joint_file(mid), HML)
        assert np.load(paths.vec_file(mid)).dtype == np.float32
        assert joints.shape == (vecs.shape[0], 22, 3)
        assert HML.min_motion_len <= vecs.shape[0] <= HML.max_motion_len
        np.testing.assert_allclose(recover_from_ric(vecs, 22), joints, atol=1e-5)
        attrs = json.loads((paths.attributes_dir / f"{mid}.json").read_text())
        MotionProgram.from_dict(attrs["program"])
        Subject.from_dict(attrs["subject"])
        lines = paths.text_file(mid).read_text().splitlines()
        assert (
            len(lines) == len(attrs["captions"])
            and sum(parse_caption_line(line).whole_clip for line in lines) >= 3
        )
    assert summary["motions"] == 24 and summary["frames"]["min"] >= HML.min_motion_len


def test_mean_std_are_train_statistics(built):
    root, _ = built
    feats = np.concatenate([np.load(DatasetPaths(root).vec_file(m)) for m in read_split(root, "train")])
    mean = np.load(DatasetPaths(root).mean_file)
    std = np.load(DatasetPaths(root).std_file)
    np.testing.assert_allclose(mean, feats.mean(0), atol=1e-4)
    sl = HML.feature_slices["ric"]
    np.testing.assert_allclose(std[sl], feats.std(0)[sl].mean(), rtol=1e-4)


def test_captions_parse_with_known_tags(built):
    root, _ = built
    allowed = set(POS_TAGS) | set(SPACY_TAGS)
    fps_sub = 0
    for mid in read_split(root, "all"):
        for i, line in enumerate(DatasetPaths(root).text_file(mid).read_text().splitlines()):
            cap = parse_caption_line(line, mid, i + 1)
            tags = {t.split("/")[1] for t in cap.tokens}
            assert tags <= allowed, (line, tags - allowed)
            assert all(t.split("/")[0].isalpha() and t.split("/")[0].islower() for t in cap.tokens), line
            if not cap.whole_clip:
                fps_sub += 1
                a, b = cap.frame_range(HML.fps)
                assert HML.min_motion_len <= b - a < HML.max_clip_len
    # Lemmas for nouns/verbs, 'left' kept, grammar tags (no tagger).
    text, tokens = realize("a man V:walk to the left|NOUN , then V:wave his right|ADJ hands")
    assert text == "a man walks to the left, then waves his right hands"
    assert tokens == ("a/DET", "man/NOUN", "walk/VERB", "to/ADP", "the/DET", "left/NOUN", "then/ADV",
                      "wave/VERB", "his/DET", "right/ADJ", "hand/NOUN")  # fmt: skip


def test_deterministic_across_workers_and_idempotent(built, tmp_path):
    root, summary = built
    other = tmp_path / "w2"
    build_synthml(other, num=24, seed=3, workers=2, progress=False)
    for sub in ("new_joint_vecs", "new_joints", "texts", "attributes"):
        for f in sorted((root / sub).iterdir()):
            assert f.read_bytes() == (other / sub / f.name).read_bytes(), f
    for name in ("Mean.npy", "Std.npy", "train.txt", "test.txt"):
        assert (root / name).read_bytes() == (other / name).read_bytes(), name
    stamp = (other / "new_joint_vecs" / "000000.npy").stat().st_mtime_ns
    again = build_synthml(other, num=24, seed=3, workers=1, progress=False)
    assert (other / "new_joint_vecs" / "000000.npy").stat().st_mtime_ns == stamp
    assert again["motions"] == 24
    with pytest.raises(FileExistsError, match="--force"):
        build_synthml(other, num=24, seed=4, workers=1, progress=False)
    build_synthml(other, num=20, seed=3, workers=1, progress=False, force=True)
    assert len(list((other / "new_joint_vecs").iterdir())) == 20  # stale motions removed
    assert (other / "new_joint_vecs" / "000000.npy").read_bytes() == (
        root / "new_joint_vecs" / "000000.npy"
    ).read_bytes()


def test_kit_build_shapes(tmp_path):
    build_synthml(tmp_path, dataset="kit", num=20, seed=0, workers=1, progress=False)
    ids = read_split(tmp_path, "all")
    assert ids[0] == "00000"  # KIT ids are 5 digits
    paths = DatasetPaths(tmp_path)
    for mid in ids[:5]:
        vecs = load_features(paths.vec_file(mid), KIT)
        joints = load_joints(paths.joint_file(mid), KIT)
        assert vecs.shape[1] == 251 and joints.shape == (vecs.shape[0], 21, 3)
        assert vecs.shape[0] >= KIT.min_motion_len
        assert 700 < joints[:, 0, 1].mean() < 1300  # pelvis height in millimetres
    assert FeatureNorm.load(paths.mean_file, paths.std_file, KIT).mean.shape == (251,)


# ------------------------------------------------------------------------------------------------
# Physics
# ------------------------------------------------------------------------------------------------


def test_physical_sanity_of_sampled_motions():
    for i in range(40):
        rng = np.random.default_rng([11, i])
        program, subject = sample_program(rng), sample_subject(rng)
        res = render_program_info(program, subject, style_seed=i)
        j = res.joints
        assert np.isfinite(j).all()
        assert MIN_SECONDS * HML.fps <= j.shape[0] - 1 <= MAX_SECONDS * HML.fps + 1e-6
        bones = _bone_lengths(j, HML.parents)
        assert np.ptp(bones, axis=0).max() < 1e-5, program.to_dict()
        canon = _canonical(j)
        assert np.ptp(_bone_lengths(canon, HML.parents), axis=0).max() < 1e-4
        feet_low = canon[:, [7, 8, 10, 11], 1].min()
        assert feet_low < 0.03, (program.to_dict(), feet_low)  # a foot touches the floor
        assert canon[:, 0, 1].min() > 0.3  # the pelvis never sinks into the floor


def test_walk_has_alternating_contacts_and_planted_feet():
    prog = _single("walk", direction="forward", speed="normal", duration=4.0)
    feats = joints_to_features(render_program(prog, Subject(), 5))
    contacts = feats[:, HML.feature_slices["foot_contact"]]
    left, right = contacts[:, 0], contacts[:, 2]
    assert 0.4 < left.mean() < 0.95 and 0.4 < right.mean() < 0.95
    assert ((left == 0) & (right == 1)).any() and ((left == 1) & (right == 0)).any()
    stand = feats[:, HML.feature_slices["foot_contact"]][:3].min()
    assert stand == 1.0  # standing still at the start: both feet in contact


def test_subjects_differ_and_rendering_is_fps_independent():
    prog = _single("jump", direction="forward", repetitions=2, amplitude="high")
    small, big = Subject(height=0.9), Subject(height=1.1, leg=1.05)
    assert not np.allclose(small.bone_lengths(), big.bone_lengths())
    hml = render_program(prog, big, 9)
    kit = render_program(prog, big, 9, dataset="kit")
    # Frames at multiples of 0.4 s exist at both 20 and 12.5 fps; KIT joint 0 is the pelvis in mm.
    n = min((hml.shape[0] - 1) // 8, (kit.shape[0] - 1) // 5) + 1
    np.testing.assert_allclose(hml[::8][:n, 0], kit[::5][:n, 0] / 1000.0, atol=1e-5)


def test_render_is_deterministic_and_style_changes_motion():
    prog = _single("wave", limb="right", repetitions=2, speed="normal", amplitude="high")
    a = render_program(prog, Subject(), 1)
    assert np.array_equal(a, render_program(prog, Subject(), 1))
    b = render_program(prog, Subject(), 2)
    assert a.shape != b.shape or not np.allclose(a, b)


# ------------------------------------------------------------------------------------------------
# Semantics: attributes are visible in the motion
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("direction", "axis", "sign"),
    [("forward", 2, 1), ("backward", 2, -1), ("left", 0, 1), ("right", 0, -1)],
)
def test_walk_direction(direction, axis, sign):
    prog = _single("walk", direction=direction, speed="normal", duration=4.0)
    root = _canonical(render_program(prog, Subject(), 4))[:, 0]
    assert sign * root[-1, axis] > 1.0, (direction, root[-1])
    if direction == "backward":
        assert abs(root[-1, 0]) < 0.3


def test_circle_returns_and_turns_change_heading():
    circle = _canonical(render_program(_single("walk", direction="circle_left", speed="normal", duration=6.0),
                                       Subject(), 4))[:, 0]  # fmt: skip
    assert np.linalg.norm(circle[-1, [0, 2]]) < 0.35 and np.abs(circle[:, 0]).max() > 1.0
    assert circle[:, 0].max() > -circle[:, 0].min()  # circles to the left (+X)
    feats = joints_to_features(render_program(_single("turn", direction="right", amplitude="normal", speed="normal"),
                                              Subject(), 4))  # fmt: skip
    yaw = -2 * feats[:, 0].sum()  # features store half the yaw of the world->facing rotation
    assert -np.pi - 0.4 < yaw < -np.pi + 0.4  # half turn, clockwise seen from above


def test_speed_and_count_are_visible():
    dist = {}
    for speed in ("slow", "fast"):
        root = _canonical(render_program(_single("walk", direction="forward", speed=speed, duration=4.0),
                                         Subject(), 4))[:, 0]  # fmt: skip
        dist[speed] = root[-1, 2]
    assert dist["fast"] > 1.6 * dist["slow"]
    for reps in (1, 3):
        j = _canonical(
            render_program(_single("jump", direction="up", repetitions=reps, amplitude="high"), Subject(), 4)
        )
        feet = j[:, [7, 8], 1].min(1)
        airborne = feet > feet.min() + 0.15
        assert int(np.sum(np.diff(airborne.astype(int)) == 1)) == reps


@pytest.mark.parametrize("limb", ["left", "right"])
def test_limb_is_visible(limb):
    wave = _canonical(render_program(_single("wave", limb=limb, repetitions=2, speed="normal", amplitude="high"),
                                     Subject(), 4))  # fmt: skip
    hi = {"left": wave[:, L_WRIST, 1].max(), "right": wave[:, R_WRIST, 1].max()}
    other = "right" if limb == "left" else "left"
    assert hi[limb] > hi[other] + 0.5
    assert wave[:, L_WRIST, 0].mean() > wave[:, R_WRIST, 0].mean()  # left is +X in the facing frame
    kick = _canonical(render_program(_single("kick", limb=limb, repetitions=1, amplitude="high", speed="normal"),
                                     Subject(), 4))  # fmt: skip
    ankle = {"left": kick[:, 7, 1].max(), "right": kick[:, 8, 1].max()}
    assert ankle[limb] > ankle[other] + 0.3


# ------------------------------------------------------------------------------------------------
# Program schema and captions
# ------------------------------------------------------------------------------------------------


def test_program_round_trip_and_sampling():
    rng = np.random.default_rng(0)
    relations = set()
    for _ in range(60):
        prog = sample_program(rng)
        relations.add(prog.relation)
        data = json.loads(json.dumps(prog.to_dict()))
        assert MotionProgram.from_dict(data) == prog
    assert relations == {"single", "sequence", "simultaneous"}
    assert len(FAMILIES) >= 12
    table = all_family_attributes()
    assert table["walk"]["direction"][:2] == ("forward", "backward") and "limb" not in table["walk"]
    assert set(table["wave"]["limb"]) == {"left", "right", "both"}


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"relation": "single", "actions": [{"family": "fly"}]}, r"actions\[0\].family='fly'"),
        ({"relation": "single", "actions": [{"family": "walk", "direction": "up", "speed": "slow", "duration": 3}]},
         r"direction='up' not allowed"),
        ({"relation": "single", "actions": [{"family": "squat", "repetitions": 2, "speed": "slow"}]},
         r"amplitude is required"),
        ({"relation": "single", "actions": [{"family": "clap", "repetitions": 2, "speed": "slow", "limb": "left"}]},
         r"limb='left' is not meaningful"),
        ({"relation": "sequence", "actions": [{"family": "clap", "repetitions": 2, "speed": "slow"}]},
         r"needs 2 action"),
        ({"relation": "simultaneous", "actions": [{"family": "clap", "repetitions": 2, "speed": "slow"},
                                                  {"family": "clap", "repetitions": 2, "speed": "slow"}]},
         r"not supported"),
        ({"relation": "single", "actions": [{"family": "clap", "repetitions": 9, "speed": "slow"}]},
         r"repetitions=9"),
        ({"relation": "single", "actions": [{"family": "clap", "repetitions": 2, "speed": "slow", "colour": 1}]},
         r"unknown field"),
    ],
)  # fmt: skip
def test_program_validation_errors(data, match):
    with pytest.raises(ProgramError, match=match):
        MotionProgram.from_dict(data)


def test_captions_paraphrase_and_record_stated():
    prog = MotionProgram(
        (ActionSpec("walk", direction="backward", speed="slow", duration=3.0),
         ActionSpec("kick", limb="left", repetitions=2, amplitude="high", speed="normal")),
        "sequence",
    )  # fmt: skip
    rng = np.random.default_rng(0)
    caps = [c for _ in range(20) for c in caption_program(prog, rng, 3)]
    assert len({c.text for c in caps}) > 20
    for c in caps:
        assert {"0.family", "1.family", "relation"} <= set(c.stated)
        words = {t.split("/")[0] for t in c.tokens}
        if "1.limb" in c.stated:
            assert "left" in words
        if "0.direction" in c.stated:
            assert words & {"backward", "backwards"}
    assert any("0.speed" not in c.stated for c in caps)  # some captions are less specific
    assert any("0.speed" in c.stated for c in caps)


def test_truncated_action_and_perturbed_rerender(built):
    root, _ = built
    full = _single("squat", repetitions=3, speed="normal", amplitude="high")
    cut = MotionProgram((full.actions[0].with_(duration=2.5),))
    a, b = render_program(full, Subject(), 7), render_program(cut, Subject(), 7)
    assert b.shape[0] < a.shape[0]
    np.testing.assert_allclose(a[:40], b[:40], atol=1e-6)  # same subject and style up to the cut
    with pytest.raises(ProgramError, match="cut-off"):
        full.actions[0].with_(duration=30.0)
    attrs = read_attributes(root, "000000")
    prog = MotionProgram.from_dict(attrs["program"])
    again = render_program(prog, Subject.from_dict(attrs["subject"]), attrs["style_seed"])
    stored = np.load(DatasetPaths(root).joint_file("000000"))
    np.testing.assert_allclose(_canonical(again), stored, atol=1e-4)


def test_attribute_phrases():
    assert attribute_phrase("kick", "limb", "left")[0] == "with the left leg"
    assert attribute_phrase("hop", "limb", "right")[1] == ("on/ADP", "the/DET", "right/ADJ", "leg/NOUN")
    assert attribute_phrase("walk", "direction", "turn_left")[0] == "forward and then turns left"
    for family, attrs in all_family_attributes().items():
        for name, values in attrs.items():
            for value in values if name != "duration" else values[:1]:
                assert attribute_phrase(family, name, value)[0]


def test_caption_vocabulary_covers_built_tokens(built):
    root, _ = built
    vocab = set(caption_vocabulary())
    for mid in read_split(root, "all"):
        for line in DatasetPaths(root).text_file(mid).read_text().splitlines():
            assert {t.split("/")[0] for t in parse_caption_line(line).tokens} <= vocab


# ------------------------------------------------------------------------------------------------
# Split by program
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def built200(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthml200")
    summary = build_synthml(root, num=200, seed=0, workers=1, progress=False)
    return root, summary


def _records(root, split):
    return [read_record(root, i) for i in read_split(root, split)]


def test_split_by_program_holds_out_programs_and_captions(built200):
    root, summary = built200
    train = _records(root, "train")
    train_programs = {r.program for r in train}
    train_windows = train_programs | {w for r in train for w in r.windows}
    train_captions = {c for r in train for c in r.captions}
    train_atoms = set().union(*(r.atoms for r in train))
    sizes = {s: len(read_split(root, s)) for s in ("train", "val", "test")}
    assert sizes == {"train": 160, "val": 10, "test": 30}
    for split in ("val", "test"):
        held = _records(root, split)
        assert all(r.program not in train_programs for r in held), split
        assert all(w not in train_windows for r in held for w in (r.program, *r.windows)), split
        assert all(c not in train_captions for r in held for c in r.captions), split
        assert all(r.atoms <= train_atoms for r in held), split  # held-out programs recombine seen values
        # The same figures through the reusable function and in the build summary.
        fig = split_overlap(root, split)
        assert fig["motions"] == sizes[split] and fig["captions"] == sum(len(r.captions) for r in held)
        assert fig["counts"] == {"programs": 0, "captions": 0, "windows": 0, "unseen_values": 0}
        assert summary["split_by_program"]["overlap"][split] == fig
    # Every motion of a program key is in one split.
    split_of_key = {}
    for split in ("train", "val", "test"):
        for r in _records(root, split):
            assert split_of_key.setdefault(r.program, split) == split
    for mid in read_split(root, "all"):
        lines = [parse_caption_line(x) for x in DatasetPaths(root).text_file(mid).read_text().splitlines()]
        assert sum(c.whole_clip for c in lines) >= 3, mid
    assert summary["split_by_program"]["caption_collisions"] == 0


def test_split_by_program_identical_across_worker_counts(built200, tmp_path):
    root, _ = built200
    build_synthml(tmp_path, num=200, seed=0, workers=2, progress=False)
    for sub in ("texts", "attributes"):
        for f in sorted((root / sub).iterdir()):
            assert f.read_bytes() == (tmp_path / sub / f.name).read_bytes(), f
    for name in ("train.txt", "val.txt", "test.txt", "Mean.npy", "Std.npy"):
        assert (root / name).read_bytes() == (tmp_path / name).read_bytes(), name


def test_assign_program_splits_keeps_groups_and_values():
    programs = [motion_program(1, i) for i in range(400)]
    splits = assign_program_splits(programs, seed=1)
    assert splits == assign_program_splits(programs, seed=1)
    assert splits != assign_program_splits(programs, seed=2)
    counts = {s: splits.count(s) for s in ("train", "val", "test")}
    assert counts == {"train": 320, "val": 20, "test": 60}  # quotas round(0.05 n), round(0.15 n)
    by_key: dict[str, set[str]] = {}
    for p, s in zip(programs, splits, strict=True):
        by_key.setdefault(program_key(p), set()).add(s)
    assert all(len(v) == 1 for v in by_key.values())
    train_atoms = set().union(
        *(program_atoms(p) for p, s in zip(programs, splits, strict=True) if s == "train")
    )
    assert all(program_atoms(p) <= train_atoms for p, s in zip(programs, splits, strict=True) if s != "train")


def test_program_key_ignores_length_and_atoms_list_values():
    walk = ActionSpec("walk", direction="left", speed="slow", duration=3.0)
    kick = ActionSpec("kick", limb="left", repetitions=2, amplitude="high", speed="normal")
    a = MotionProgram((walk, kick), "sequence")
    b = MotionProgram((walk.with_(duration=5.5), kick), "sequence")
    assert (
        program_key(a)
        == program_key(b)
        == (
            "sequence|walk(direction=left,speed=slow)|kick(limb=left,repetitions=2,amplitude=high,speed=normal)"
        )
    )
    assert program_key(a) != program_key(MotionProgram((walk, kick.with_(limb="right")), "sequence"))
    assert action_key(kick) == "single|kick(limb=left,repetitions=2,amplitude=high,speed=normal)"
    assert program_atoms(a) == {
        ("relation", "sequence"), ("family", "walk"), ("family", "kick"), ("walk", "direction", "left"),
        ("walk", "speed", "slow"), ("kick", "limb", "left"), ("kick", "repetitions", 2),
        ("kick", "amplitude", "high"), ("kick", "speed", "normal"),
    }  # fmt: skip
    assert caption_key("A man walks, then  jumps.") == "a man walks then jumps"


def test_overlap_figures_count_shared_programs_and_captions():
    walk = MotionProgram((ActionSpec("walk", direction="forward", speed="slow", duration=3.0),))
    fast = MotionProgram((ActionSpec("walk", direction="forward", speed="fast", duration=3.0),))
    jump = MotionProgram((ActionSpec("jump", direction="up", repetitions=2, amplitude="high"),))
    seq = MotionProgram((jump.actions[0], walk.actions[0]), "sequence")
    train = [
        MotionRecord.from_parts(walk, ["A person walks slowly.", "someone walks forward"]),
        MotionRecord.from_parts(seq, ["a man jumps, then walks"], subclip_actions=[0]),
    ]
    held = [
        MotionRecord.from_parts(walk, ["a person walks slowly", "a human strolls"]),
        MotionRecord.from_parts(fast, ["Someone walks forward.", "a person walks quickly"]),
        MotionRecord.from_parts(jump, ["a person jumps"]),
    ]
    fig = overlap_figures(train, held)
    assert fig["motions"] == 3 and fig["captions"] == 5 and fig["windows"] == 3
    assert fig["counts"] == {"programs": 1, "captions": 2, "windows": 2, "unseen_values": 1}
    assert fig["programs_in_train"] == 0.3333 and fig["captions_in_train"] == 0.4
    assert fig["windows_in_train"] == 0.6667  # the single jump equals the sequence's sub-clip window
    assert fig["unseen_values"] == 0.3333  # "fast" walking never occurs in training


def test_make_motion_redraws_captions_to_avoid_and_drops_windows(monkeypatch):
    plain = make_motion(0, 8)
    whole = [c for c in plain["captions"] if c.start == c.end == 0]
    sub = [c for c in plain["captions"] if c.end > 0]
    assert len(whole) == 4 and len(sub) == 1
    avoid = frozenset(caption_key(c.text) for c in whole[:2]) | {caption_key(sub[0].text)}
    fixed = make_motion(0, 8, avoid=CaptionFilter(texts=avoid))
    np.testing.assert_array_equal(fixed["joints"], plain["joints"])
    fixed_whole = [c for c in fixed["captions"] if c.start == c.end == 0]
    fixed_sub = [c for c in fixed["captions"] if c.end > 0]
    assert fixed_whole[:2] == whole[2:]  # captions that do not collide are kept, in order
    assert len(fixed_whole) == 4 and not {caption_key(c.text) for c in fixed["captions"]} & avoid
    assert len({caption_key(c.text) for c in fixed_whole}) == 4
    assert all({"0.family", "1.family", "relation"} <= set(c.stated) for c in fixed_whole)
    assert (fixed_sub[0].start, fixed_sub[0].end) == (sub[0].start, sub[0].end)
    # The redrawn sub-clip line describes the same action (its stated names carry that index).
    assert {n.split(".")[0] for n in fixed_sub[0].stated} == {n.split(".")[0] for n in sub[0].stated} == {"0"}
    assert fixed["redraws"] >= 3 and fixed["collisions"] == 0
    dropped = make_motion(0, 8, avoid=CaptionFilter(windows=frozenset(plain["record"].windows)))
    assert dropped["captions"] == whole and dropped["subclips_dropped"] == 1
    # No draws allowed: colliding captions fill up to three whole-clip lines and are counted.
    monkeypatch.setattr(build_module, "MAX_REDRAWS", 0)
    every = frozenset(caption_key(c.text) for c in whole)
    stuck = make_motion(0, 8, avoid=CaptionFilter(texts=every))
    assert [c for c in stuck["captions"] if c.start == c.end == 0] == whole[:3] and stuck["collisions"] == 3


def test_state_all_captions_state_every_attribute():
    prog = MotionProgram(
        (ActionSpec("walk", direction="forward", speed="normal", duration=3.0),
         ActionSpec("wave", limb="both", repetitions=2, speed="normal", amplitude="normal")),
        "simultaneous",
    )  # fmt: skip
    rng = np.random.default_rng(0)
    for cap in caption_program(prog, rng, 5, state_all=True):
        want = {f"{i}.{k}" for i, a in enumerate(prog.actions) for k in a.meaningful() if k != "duration"}
        assert want <= set(cap.stated), (cap.text, want - set(cap.stated))
    plain = caption_program(prog, np.random.default_rng(0), 20)
    assert any("0.speed" not in c.stated for c in plain)  # without it, "normal" speed is mostly unsaid
