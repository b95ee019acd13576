"""Data engine: perturbation truth, file layout, inspect_annotations on its output, determinism."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from data.annotations import GOAL_CAPTION, GOAL_MOTION, TASKS, MotionResolver, read_annotation_file
from data.engine.perturb import CHANGE_KINDS, Change, apply_changes, imperfect_ladder
from data.engine.phrasing import assess, describe_program
from data.engine.run import ENGINE_LIST, STAGE3_FILE, EngineConfig, parse_stated, run_engine
from data.layout import read_captions
from data.motion_repr import joints_to_features, recover_from_ric
from data.synth.body import Subject
from data.synth.program import ActionSpec, MotionProgram
from data.synth.render import render_program
from data.synth.sampling import sample_program

N_MOTIONS = 6
ROOT_SEED = 13
"""Programs of the tiny root: with engine seed 3 their ladders use every change kind (asserted)."""
WINDOWED_TASKS = ("stage0_t2m", "t2m_direct_generation", "m2t_motion_caption")


def _write_root(root: Path, seed: int = ROOT_SEED) -> None:
    """A SynthML-like root: rendered motions, two captions each, attributes with stated lists."""
    for d in ("new_joint_vecs", "new_joints", "texts", "attributes"):
        (root / d).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    ids, feats_all = [], []
    for i in range(N_MOTIONS):
        mid = f"{i:06d}"
        prog = sample_program(rng)
        full = frozenset((k, a) for k, act in enumerate(prog.actions) for a in act.meaningful())
        caps = [
            ("a person " + describe_program(prog, "v3") + ".", sorted(full)),
            ("a person " + describe_program(prog, "v3", frozenset()) + ".", []),
        ]
        joints = render_program(prog, Subject(), i)
        feats = joints_to_features(joints).astype(np.float32)
        np.save(root / "new_joint_vecs" / f"{mid}.npy", feats)
        np.save(root / "new_joints" / f"{mid}.npy", joints)
        windows = [(0.0, 0.0)] * len(caps)
        if i == 0:  # a sub-clip caption (feeds the caption tasks and stage 3 only)
            caps.append(("a person moves.", []))
            windows.append((0.5, 2.5))
        lines = []
        for (text, _), (f, t) in zip(caps, windows, strict=True):
            toks = " ".join(f"{w.strip('.,')}/OTHER" for w in text.split())
            lines.append(f"{text}#{toks}#{f}#{t}")
        (root / "texts" / f"{mid}.txt").write_text("\n".join(lines) + "\n")
        attrs = {"program": prog.to_dict(), "subject": Subject().to_dict(), "style_seed": i,
                 "captions": [{"text": t, "stated": [f"{k}.{a}" for k, a in st]} for t, st in caps]}  # fmt: skip
        (root / "attributes" / f"{mid}.json").write_text(json.dumps(attrs))
        ids.append(mid)
        feats_all.append(feats)
    cat = np.concatenate(feats_all)
    np.save(root / "Mean.npy", cat.mean(0).astype(np.float32))
    np.save(root / "Std.npy", np.where(cat.std(0) < 1e-4, 1.0, cat.std(0)).astype(np.float32))
    for split in ("train", "all", "train_val"):
        (root / f"{split}.txt").write_text("\n".join(ids) + "\n")


@pytest.fixture(scope="module")
def engine_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("engine")
    _write_root(base / "root_a")
    shutil.copytree(base / "root_a", base / "root_b")
    cfg = EngineConfig(dataset_root=str(base / "root_a"), output_dir=str(base / "out_a"), seed=3)
    summary = run_engine(cfg)
    return base, cfg, summary


def test_engine_writes_every_file_in_the_released_layout(engine_run):
    base, cfg, summary = engine_run
    out = Path(cfg.output_dir)
    # one entry per caption window in stage 0 / T2M direct / M2T (motion 0 has a sub-clip caption),
    # one per whole-clip caption in T2T, one per goal elsewhere
    want = {k: N_MOTIONS for k in TASKS} | {k: N_MOTIONS + 1 for k in WINDOWED_TASKS}
    want["t2t_prompt_analysis"] = 2 * N_MOTIONS
    assert summary.entries == want
    for task, spec in TASKS.items():
        f = read_annotation_file(out / spec.file_name)
        assert len(f.annotations) == want[task], task
        assert [a.id for a in f.annotations] == list(range(want[task]))
        assert all(a.task == spec.task_string for a in f.annotations)
        has_candidates = task.startswith("tm2") or task == "irmogen_cot"
        assert all(bool(a.candidates) == has_candidates for a in f.annotations), task
    assert summary.candidates["tm2t_assessment_analysis"] == 10 * N_MOTIONS
    assert summary.imperfect_motions == 4 * N_MOTIONS
    listed = (base / "root_a" / ENGINE_LIST).read_text().split()
    assert listed == [str(900000 + k) for k in range(4 * N_MOTIONS)]
    assert (base / "root_a" / "train.txt").read_text().split() == [f"{i:06d}" for i in range(N_MOTIONS)]
    # every referenced motion resolves against the dataset root alone
    res = MotionResolver([base / "root_a"])
    cot = read_annotation_file(out / TASKS["irmogen_cot"].file_name)
    for ann in cot.annotations:
        for cand in ann.all_candidates():
            assert set(cand.motions) == {"<Goal_Motion>", *(f"<Intermediate_Motion_{k}>" for k in range(4))}
            for ref in cand.motions.values():
                assert res.load(ref).shape[1] == 263
    rows = [json.loads(x) for x in (out / STAGE3_FILE).read_text().splitlines()]
    assert len(rows) == summary.stage3_rows == 2 * N_MOTIONS + 1
    assert (rows[2]["f_tag"], rows[2]["to_tag"]) == (0.5, 2.5)
    assert rows[0]["prompt"].endswith("\nGoal Text: " + rows[0]["caption"].rstrip(".") + ".\n\n Response:")
    assert sum(summary.attempts_drawn.values()) == 2 * N_MOTIONS


@pytest.mark.parametrize("task", WINDOWED_TASKS)
def test_each_caption_window_is_its_own_entry(engine_run, task):
    """Entries = the distinct (clip, window) pairs of the caption files, each with that window's captions."""
    base, cfg, _ = engine_run
    want = {}
    for i in range(N_MOTIONS):
        for line in read_captions(base / "root_a" / "texts" / f"{i:06d}.txt"):
            want.setdefault((f"{i:06d}", line.start, line.end), []).append(line.caption)
    got = {}
    for ann in read_annotation_file(Path(cfg.output_dir) / TASKS[task].file_name).annotations:
        ref = ann.motions[GOAL_MOTION]
        got[(ref.motion_name, ref.f_tag, ref.to_tag)] = list(ann.texts[GOAL_CAPTION])
    assert got == want
    assert ("000000", 0.5, 2.5) in got and len(got[("000000", 0.0, 0.0)]) == 2


def test_every_imperfect_motion_is_its_stored_program(engine_run):
    """For each change kind: the records rebuild the stored program, whose render is the written motion."""
    base, _, _ = engine_run
    root = base / "root_a"
    kinds = set()
    for mid in (root / ENGINE_LIST).read_text().split():
        attrs = json.loads((root / "attributes" / f"{mid}.json").read_text())
        goal_id = attrs["engine"]["goal"]
        goal = MotionProgram.from_dict(
            json.loads((root / "attributes" / f"{goal_id}.json").read_text())["program"]
        )
        program = MotionProgram.from_dict(attrs["program"])
        changes = [Change.from_dict(c) for c in attrs["engine"]["changes"]]
        kinds.update(c.kind for c in changes)
        assert program != goal
        assert apply_changes(goal, changes) == program, mid
        joints = render_program(
            program, Subject.from_dict(attrs["subject"]), attrs["style_seed"], "humanml3d"
        )
        feats = joints_to_features(joints.astype(np.float64), "humanml3d", continuous_yaw=True)
        np.testing.assert_allclose(np.load(root / "new_joint_vecs" / f"{mid}.npy"), feats, rtol=0, atol=1e-5)
        np.testing.assert_allclose(
            np.load(root / "new_joints" / f"{mid}.npy"), recover_from_ric(feats, 22), rtol=0, atol=1e-5
        )
    assert kinds == set(CHANGE_KINDS)


def test_apply_changes_refuses_records_that_do_not_fit():
    goal = MotionProgram((ActionSpec("walk", direction="forward", speed="slow", duration=4.0),), "single")
    fast = apply_changes(goal, [Change("attr", 0, "speed", "slow", "fast")])
    assert fast.actions[0].speed == "fast" and fast.actions[0].direction == "forward"
    with pytest.raises(ValueError, match="speed='normal'"):
        apply_changes(goal, [Change("attr", 0, "speed", "normal", "fast")])
    with pytest.raises(ValueError, match="drop_second"):
        apply_changes(goal, [Change("drop_second", 1, None, goal.actions[0], None)])


def test_engine_output_passes_inspect_annotations(engine_run, capsys):
    import torch

    from models.vqvae import MotionVQVAE, VQVAEConfig
    from prepare.inspect_annotations import main

    base, cfg, _ = engine_run
    torch.manual_seed(0)
    vq = MotionVQVAE(263, VQVAEConfig(nb_code=512, code_dim=16, output_emb_width=16, width=16, depth=1))
    ckpt = base / "vq.pth"
    vq.save_checkpoint(ckpt)
    rc = main(
        [
            "--dataset-root",
            cfg.dataset_root,
            "--vq-checkpoint",
            str(ckpt),
            "--annotations-dir",
            cfg.output_dir,
        ]
    )
    captured = capsys.readouterr()
    out = captured.out
    assert rc == 0, captured.err
    assert "MISSING" not in out
    assert f"task tm2m_instructed_refinement: {10 * N_MOTIONS} examples" in out
    assert f"task irmogen_cot: {2 * N_MOTIONS} examples" in out


def test_workers_give_byte_identical_files(engine_run):
    """Two render workers write the same annotation and motion files, byte for byte, as one."""
    base, cfg, _ = engine_run
    cfg_b = EngineConfig(dataset_root=str(base / "root_b"), output_dir=str(base / "out_b"), seed=3, workers=2)
    run_engine(cfg_b)
    out_a, out_b = Path(cfg.output_dir), Path(cfg_b.output_dir)
    for name in [spec.file_name for spec in TASKS.values()] + [STAGE3_FILE]:
        assert (out_a / name).read_bytes() == (out_b / name).read_bytes(), name
    listed = (base / "root_a" / ENGINE_LIST).read_text()
    assert (base / "root_b" / ENGINE_LIST).read_text() == listed
    for mid in listed.split():
        for sub, ext in (
            ("new_joint_vecs", "npy"),
            ("new_joints", "npy"),
            ("texts", "txt"),
            ("attributes", "json"),
        ):
            a = (base / "root_a" / sub / f"{mid}.{ext}").read_bytes()
            assert (base / "root_b" / sub / f"{mid}.{ext}").read_bytes() == a, (sub, mid)


def test_rerun_is_idempotent_and_foreign_ids_are_refused(engine_run, tmp_path):
    base, cfg, summary = engine_run
    again = run_engine(
        EngineConfig(dataset_root=cfg.dataset_root, output_dir=cfg.output_dir, seed=3, workers=2)
    )
    assert again.seconds == summary.seconds  # finished run with the same config: skipped
    run_engine(
        EngineConfig(dataset_root=cfg.dataset_root, output_dir=str(tmp_path / "o"), seed=3, max_goals=2)
    )
    np.save(base / "root_b" / "new_joint_vecs" / "900100.npy", np.zeros((4, 263), np.float32))
    root_c = tmp_path / "root_c"
    shutil.copytree(base / "root_b", root_c)
    (root_c / ENGINE_LIST).unlink()
    with pytest.raises(ValueError, match="collides"):
        run_engine(EngineConfig(dataset_root=str(root_c), output_dir=str(tmp_path / "o2"), seed=3))


def test_assessments_are_true_by_construction():
    rng = np.random.default_rng(0)
    goal = MotionProgram((ActionSpec("walk", direction="forward", speed="slow", duration=4.0),), "single")
    stated = frozenset({(0, "direction")})
    for imp in imperfect_ladder(rng, goal, stated, 4)[1:]:
        for ch in imp.changes:
            got_prog = imp.program
            if ch.kind == "attr":
                assert getattr(goal.actions[ch.action], ch.attr) == ch.goal
                assert getattr(got_prog.actions[0], ch.attr) == ch.got != ch.goal
    # a speed change is no error for a caption that does not state speed
    slow_to_fast = MotionProgram(
        (ActionSpec("walk", direction="forward", speed="fast", duration=4.0),), "single"
    )

    ch = Change("attr", 0, "speed", "slow", "fast")
    a, r = assess([ch], goal, frozenset({(0, "direction")}), rng, 2)
    assert r == ["No refinements needed.", "No refinements needed."]
    a, r = assess([ch], goal, frozenset({(0, "speed")}), rng, 3)
    assert all("quickly" in x and "slowly" in x for x in a) and all("slowly" in x for x in r)
    assert slow_to_fast.actions[0].speed == ch.got


def test_parse_stated_formats():
    want = frozenset({(0, "speed"), (1, "limb")})
    assert parse_stated(["0.speed", "actions[1].limb", "0.family"], "x") == want
    assert parse_stated([[0, "speed"], [1, "limb"]], "x") == want
    assert parse_stated({"0": ["speed"], "1": ["limb"]}, "x") == want


@pytest.mark.parametrize("path", ["configs/tiny/engine.yaml", "configs/humanml3d/engine.yaml"])
def test_engine_configs_load(path):
    from data.config import load_config

    cfg = load_config(EngineConfig, Path(__file__).resolve().parents[1] / path)
    assert cfg.variants_per_goal == 4 and cfg.split == "train"
