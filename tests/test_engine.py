"""Data engine: perturbation truth, file layout, inspect_annotations on its output, determinism."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml

from data.annotations import (
    GOAL_CAPTION,
    GOAL_MOTION,
    TASKS,
    MotionResolver,
    read_annotation_file,
    write_annotation_file,
)
from data.engine.ownership import ENGINE_LIST, ENGINE_MANIFEST, EngineMotionsError
from data.engine.perturb import CHANGE_KINDS, Change, apply_changes, imperfect_ladder
from data.engine.phrasing import assess, describe_program
from data.engine.run import STAGE3_FILE, EngineConfig, annotation_file_text, parse_stated, run_engine
from data.layout import read_captions
from data.motion_repr import joints_to_features, recover_from_ric
from data.run_folder import FolderLock, RunFolderError, file_sha256, read_manifest
from data.synth.body import Subject
from data.synth.program import ActionSpec, MotionProgram
from data.synth.render import render_program
from data.synth.sampling import sample_program
from data.synth.writer import motion_files

N_MOTIONS = 6
ROOT_SEED = 13
"""Programs of the tiny root: with engine seed 3 their ladders use every change kind (asserted)."""
WINDOWED_TASKS = ("stage0_t2m", "t2m_direct_generation", "m2t_motion_caption")
REPO = Path(__file__).resolve().parents[1]


def tree(root: Path) -> dict[str, str]:
    """{relative path: sha256} of every file under ``root``, hidden ones included (``/`` for folders)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            out[Path(dirpath, d).relative_to(root).as_posix() + "/"] = ""
        for f in filenames:
            p = Path(dirpath, f)
            out[p.relative_to(root).as_posix()] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


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
    before = tree(base / "root_a")
    again = run_engine(
        EngineConfig(dataset_root=cfg.dataset_root, output_dir=cfg.output_dir, seed=3, workers=2)
    )
    assert again.seconds == summary.seconds  # finished run with the same config: skipped
    assert tree(base / "root_a") == before
    # same seed, other output folder, fewer goals: the same bytes under the same ids, so shared
    small = run_engine(
        EngineConfig(dataset_root=cfg.dataset_root, output_dir=str(tmp_path / "o"), seed=3, max_goals=2)
    )
    assert small.counts["imperfect_reused"] == 8 and small.counts["imperfect_rendered"] == 0
    assert {k: v for k, v in tree(base / "root_a").items() if not k.startswith("engine_motions")} == {
        k: v for k, v in before.items() if not k.startswith("engine_motions")
    }
    owners = json.loads((base / "root_a" / ENGINE_MANIFEST).read_text())
    assert len(owners["motions"]["900000"]["runs"]) == 2 and len(owners["motions"]["900023"]["runs"]) == 1
    # files in the id range that no engine run recorded are never written over, even with overwrite
    root_c = tmp_path / "root_c"
    _write_root(root_c)
    np.save(root_c / "new_joint_vecs" / "900005.npy", np.zeros((4, 263), np.float32))
    before_c = tree(root_c)
    for overwrite in (False, True):
        with pytest.raises(
            EngineMotionsError, match=r"collides with existing motions 900005 .*imperfect_id_start=900024"
        ):
            run_engine(EngineConfig(dataset_root=str(root_c), output_dir=str(tmp_path / "o2"), seed=3,
                                    overwrite=overwrite))  # fmt: skip
        assert tree(root_c) == before_c and not (tmp_path / "o2").exists()


def test_summary_counts_what_was_left_out_or_reused(engine_run):
    base, cfg, summary = engine_run
    stored = json.loads((Path(cfg.output_dir) / "engine_summary.json").read_text())
    assert stored["counts"] == summary.counts
    c = summary.counts
    assert c["imperfect_rendered"] == 4 * N_MOTIONS and c["imperfect_reused"] == 0
    assert c["subclip_captions_left_out"] == 1  # motion 0's sub-clip caption: caption tasks only
    assert c["goals_without_whole_clip_captions"] == 0 and c["stated_keys_ignored"] == 0
    # every non-last rung plans two changes, the last one; the counted fallbacks are the rungs short of that
    ladders = json.loads((Path(cfg.output_dir) / "imperfect_motions.json").read_text())
    short = 0
    for mid, rec in ladders.items():
        changes = json.loads((base / "root_a" / "attributes" / f"{mid}.json").read_text())["engine"][
            "changes"
        ]
        planned = 0 if rec["rung"] == 0 else (1 if rec["rung"] == 3 else 2)
        short += planned > 0 and (len(changes) < planned or changes[0]["kind"] == "family")
    assert c["ladder_rungs_unrelated_fallback"] + c["ladder_rungs_fewer_changes"] == short
    ignored: Counter = Counter()
    assert parse_stated(["0.speed", "0.colour", "relation", "1.family"], "x", ignored) == {(0, "speed")}
    assert ignored == {"colour": 1}


def test_annotation_files_are_the_released_serialisation(engine_run, tmp_path):
    _, cfg, _ = engine_run
    for task in ("stage0_t2m", "irmogen_cot"):
        path = Path(cfg.output_dir) / TASKS[task].file_name
        f = read_annotation_file(path)
        info = json.loads(path.read_text())["info"]
        assert (
            write_annotation_file(tmp_path / "x.json", f.annotations, info).read_bytes() == path.read_bytes()
        )
        assert annotation_file_text(f.annotations, info).encode() == path.read_bytes()


def test_second_engine_run_with_another_seed_is_refused(tmp_path):
    """Issue 10: a second run with another seed re-rendered the first run's imperfect motions."""
    root = tmp_path / "root"
    _write_root(root)
    first = EngineConfig(dataset_root=str(root), output_dir=str(tmp_path / "a"), seed=3, max_goals=2)
    run_a = run_engine(first)
    owners = json.loads((root / ENGINE_MANIFEST).read_text())
    run_id_a = read_manifest(first.output_dir)["run_id"]
    assert set(owners["runs"]) == {run_id_a}
    assert owners["motions"]["900007"]["runs"] == [run_id_a]
    files = owners["motions"]["900007"]["files"]
    assert files["new_joint_vecs/900007.npy"]["sha256"] == file_sha256(root / "new_joint_vecs" / "900007.npy")
    before = tree(tmp_path)

    second = EngineConfig(dataset_root=str(root), output_dir=str(tmp_path / "b"), seed=4, max_goals=2)
    with pytest.raises(EngineMotionsError) as err:
        run_engine(second)
    msg = str(err.value)
    for part in (f"run {run_id_a}", f"output_dir {tmp_path / 'a'}", "seed 3", "seed 4", "900000..900007",
                 "imperfect_root=DIR", "imperfect_id_start=900008", "overwrite=true"):  # fmt: skip
        assert part in msg, part
    assert tree(tmp_path) == before  # nothing written: not the root, not the new output folder

    # the fix it names: render beside them; both runs then keep their own motions
    run_b = run_engine(dataclasses.replace(second, imperfect_id_start=900008))
    assert run_b.counts["imperfect_rendered"] == 8
    assert run_engine(first).seconds == run_a.seconds  # the first run is still finished and intact
    listed = (root / ENGINE_LIST).read_text().split()
    assert listed == [str(900000 + k) for k in range(16)]

    # overwrite=true re-renders only engine motion files, and the first run notices
    goals = {k: v for k, v in tree(root).items() if not k.split("/")[-1].startswith("9000")}
    run_c = run_engine(dataclasses.replace(second, output_dir=str(tmp_path / "c"), overwrite=True))
    assert run_c.counts["imperfect_taken_over"] == 8 and run_c.counts["imperfect_rendered"] == 0 + 8
    after = tree(root)
    assert {k: after[k] for k in goals if not k.startswith("engine_motions")} == {
        k: v for k, v in goals.items() if not k.startswith("engine_motions")
    }
    assert after["new_joint_vecs/900007.npy"] != before["root/new_joint_vecs/900007.npy"]
    owners = json.loads((root / ENGINE_MANIFEST).read_text())
    assert owners["runs"][run_id_a]["superseded"] == 8
    with pytest.raises(EngineMotionsError, match=f"output_dir {tmp_path / 'c'}"):
        run_engine(first)  # its finished summary no longer describes the root: it reruns, and is refused


_KILL_CHILD = """
import os, signal, sys
import data.synth.writer as writer
from data.engine.run import EngineConfig, run_engine

calls = [0]
real = writer.atomic_write_bytes

def dying(path, data, *, tag="", **kw):
    calls[0] += 1
    if calls[0] == int(sys.argv[3]):  # killed in the middle of a file: a half-written temporary
        open(os.path.join(os.path.dirname(path), "." + os.path.basename(path) + "." + tag + "0a1b2c3d.partial"),
             "wb").write(data[: len(data) // 2])
        os.kill(os.getpid(), signal.SIGKILL)
    return real(path, data, tag=tag, **kw)

writer.atomic_write_bytes = dying
run_engine(EngineConfig(dataset_root=sys.argv[1], output_dir=sys.argv[2], seed=3, max_goals=3))
"""


def test_killed_engine_run_leaves_no_half_motion_and_the_rerun_finishes(tmp_path, engine_run):
    """Issue 10: an interrupted engine run left half-written motions that blocked the rerun."""
    base, _, _ = engine_run
    root, out = tmp_path / "root", tmp_path / "out"
    _write_root(root)
    # killed in the 5th motion's third file (4 files a motion): 4 motions complete, the 5th half
    proc = subprocess.run([sys.executable, "-c", _KILL_CHILD, str(root), str(out), str(4 * 4 + 3)],
                          cwd=REPO, capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert (root / "new_joint_vecs" / "900004.npy").is_file() and not (root / "texts" / "900004.txt").exists()
    assert [p.name for p in (root / "texts").iterdir() if p.name.endswith(".partial")]
    assert read_manifest(out)["status"] == "running"
    claimed = json.loads((root / ENGINE_MANIFEST).read_text())["motions"]
    assert len(claimed) == 12 and claimed["900004"]["files"] is None

    summary = run_engine(EngineConfig(dataset_root=str(root), output_dir=str(out), seed=3, max_goals=3))
    assert summary.counts["temporaries_removed"] == 1
    assert summary.counts["imperfect_rendered"] + summary.counts["imperfect_reused"] == 12
    assert summary.counts["imperfect_rendered"] >= 8  # at least the motions the killed run never finished
    assert not [p for p in root.rglob("*.partial")] and not (root / ".run.lock").exists()
    assert read_manifest(out)["status"] == "done"
    # byte-identical to the uninterrupted run of the module fixture (same root programs, same seed)
    for mid in (root / ENGINE_LIST).read_text().split():
        for rel in motion_files(mid):
            assert (root / rel).read_bytes() == (base / "root_a" / rel).read_bytes(), rel
    for name in [TASKS["irmogen_cot"].file_name, STAGE3_FILE]:
        small = EngineConfig(
            dataset_root=str(base / "root_a"), output_dir=str(tmp_path / "ref"), seed=3, max_goals=3
        )
        if not (tmp_path / "ref").exists():
            run_engine(small)
        assert (out / name).read_bytes() == (tmp_path / "ref" / name).read_bytes(), name


def test_two_engine_runs_on_one_root_do_not_interleave(tmp_path):
    root = tmp_path / "root"
    _write_root(root)
    lock = FolderLock(root, "data.synth")  # e.g. data.synth still writing the dataset
    try:
        with pytest.raises(RunFolderError, match="locked by data.synth"):
            run_engine(
                EngineConfig(dataset_root=str(root), output_dir=str(tmp_path / "o"), seed=3, max_goals=1)
            )
    finally:
        lock.release()
    assert not (tmp_path / "o").exists() and not (root / ENGINE_MANIFEST).exists()


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


def test_codes_follow_engine_motions_that_another_run_re_rendered(tmp_path, capsys):
    """Issue 10: after a second engine run re-rendered the imperfect motions, tokenisation reused the
    old code files by id, so codes no longer matched their motions, without a word."""
    import torch

    from data.normalization import FeatureNorm
    from models.vq_tokenize import TokenizeConfig, tokenize_dataset
    from models.vqvae import MotionVQVAE, VQVAEConfig
    from prepare.inspect_annotations import main as inspect_main

    root = tmp_path / "root"
    _write_root(root)
    first = EngineConfig(dataset_root=str(root), output_dir=str(tmp_path / "a"), seed=3, max_goals=2)
    run_engine(first)
    torch.manual_seed(0)
    vq = MotionVQVAE(263, VQVAEConfig(nb_code=512, code_dim=16, output_emb_width=16, width=16, depth=1))
    vq.save_checkpoint(tmp_path / "vq.pth")
    tok = TokenizeConfig(dataset_root=str(root), vq_checkpoint=str(tmp_path / "vq.pth"), progress=False,
                         output_dir=str(tmp_path / "codes"), splits=("all", "engine_motions"))  # fmt: skip
    norm = FeatureNorm.identity(263)
    index = tokenize_dataset(tok, vq, norm)
    assert index["counts"]["ids"] == N_MOTIONS + 8

    def inspect(out: str) -> tuple[int, str]:
        capsys.readouterr()  # drop the progress bars written so far
        rc = inspect_main(
            ["--dataset-root", str(root), "--codes-dir", tok.output_dir, "--annotations-dir", out]
        )
        return rc, capsys.readouterr().err

    assert inspect(first.output_dir) == (0, "")
    second = EngineConfig(
        dataset_root=str(root), output_dir=str(tmp_path / "b"), seed=4, max_goals=2, overwrite=True
    )
    run_engine(second)
    rc, err = inspect(second.output_dir)
    assert rc == 1 and "900000.npy was encoded from a motion with sha256" in err and "re-rendered" in err
    # the first run's annotation files no longer describe the motions in the root: said so, not built
    rc, err = inspect(first.output_dir)
    assert (
        rc == 1 and f"annotation files in {first.output_dir} describe imperfect motions that changed" in err
    )
    index = tokenize_dataset(tok, vq, norm)
    c = index["counts"]
    assert (c["reencoded_motion_changed"], c["encoded"], c["reused"]) == (8, 8, N_MOTIONS + 1)
    assert inspect(second.output_dir) == (0, "")
    assert inspect(first.output_dir)[0] == 1


def test_rerun_into_the_same_folder_with_another_seed_needs_force(tmp_path):
    root, out = tmp_path / "root", tmp_path / "out"
    _write_root(root)
    cfg = EngineConfig(dataset_root=str(root), output_dir=str(out), seed=3, max_goals=1)
    run_engine(cfg)
    before = tree(tmp_path)
    with pytest.raises(RunFolderError, match=r"seed was 3 and is 4 now.*pass force=true") as err:
        run_engine(dataclasses.replace(cfg, seed=4))
    assert not isinstance(err.value, EngineMotionsError)  # the output folder refuses first
    assert tree(tmp_path) == before
    # force: the run starts over; the motions only it used are its own to re-render
    summary = run_engine(dataclasses.replace(cfg, seed=4, force=True))
    assert summary.counts["imperfect_rendered"] == 4 and summary.counts["imperfect_taken_over"] == 0
    owners = json.loads((root / ENGINE_MANIFEST).read_text())
    assert (
        list(owners["runs"]) == [read_manifest(out)["run_id"]]
        and owners["runs"][read_manifest(out)["run_id"]]["seed"] == 4
    )
    assert yaml.safe_load((out / "config.yaml").read_text())["seed"] == 4
