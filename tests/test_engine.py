"""Data engine: perturbation truth, file layout, inspect_annotations on its output, determinism."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from data.annotations import TASKS, MotionResolver, read_annotation_file
from data.engine.perturb import imperfect_ladder
from data.engine.phrasing import assess, describe_program
from data.engine.run import ENGINE_LIST, STAGE3_FILE, EngineConfig, parse_stated, run_engine
from data.synth.program import ActionSpec, MotionProgram, sample_program

N_MOTIONS = 6


def _write_root(root: Path) -> None:
    """A SynthML-like root: rendered motions, two captions each, attributes with stated lists."""
    from data.motion_repr import joints_to_features
    from data.synth.body import Subject
    from data.synth.render import render_program

    for d in ("new_joint_vecs", "new_joints", "texts", "attributes"):
        (root / d).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(5)
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
    for task, spec in TASKS.items():
        f = read_annotation_file(out / spec.file_name)
        assert len(f.annotations) == N_MOTIONS, task
        assert all(a.task == spec.task_string for a in f.annotations)
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
    m2t = read_annotation_file(out / TASKS["m2t_motion_caption"].file_name).annotations[0]
    assert [c.motions["<Goal_Motion>"].to_tag for c in m2t.candidates] == [0.0, 2.5]
    assert rows[0]["prompt"].endswith("\nGoal Text: " + rows[0]["caption"].rstrip(".") + ".\n\n Response:")
    assert sum(summary.attempts_drawn.values()) == 2 * N_MOTIONS


def test_engine_output_passes_inspect_annotations(engine_run, capsys):
    import torch

    from data.inspect_annotations import main
    from models.vqvae import MotionVQVAE, VQVAEConfig

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


def test_engine_is_deterministic_for_a_seed(engine_run):
    base, cfg, _ = engine_run
    cfg_b = EngineConfig(dataset_root=str(base / "root_b"), output_dir=str(base / "out_b"), seed=3)
    run_engine(cfg_b)
    for spec in TASKS.values():
        a = json.loads((Path(cfg.output_dir) / spec.file_name).read_text())["annotations"]
        b = json.loads((Path(cfg_b.output_dir) / spec.file_name).read_text())["annotations"]
        assert a == b, spec.file_name
    for k in (900000, 900013):
        fa = np.load(base / "root_a" / "new_joint_vecs" / f"{k}.npy")
        fb = np.load(base / "root_b" / "new_joint_vecs" / f"{k}.npy")
        np.testing.assert_array_equal(fa, fb)


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
    from data.engine.perturb import Change

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
