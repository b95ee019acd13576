"""Owned run folders (data/run_folder.py) and the two commands wired to them (data.synth, prepare.train_vq)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from data.run_folder import (
    LOCK,
    MANIFEST,
    OutputFolder,
    Provenance,
    ProvenanceError,
    RunFolder,
    RunFolderError,
    atomic_save_npy,
    atomic_torch_save,
    atomic_write,
    atomic_write_json,
    atomic_write_text,
    check_provenance,
    config_diff,
    file_sha256,
    fingerprint,
    path_digest,
    read_manifest,
)
from data.runtime import open_run

REPO = Path(__file__).resolve().parent.parent
CFG = {"lr": 0.001, "model": {"depth": 2, "width": 16}, "max_steps": 0, "dataset_root": "/data/a"}


def tree(root: Path) -> dict[str, str]:
    """{relative path: sha256 of content} of every file under ``root`` (``/`` suffix for folders)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            out[Path(dirpath, d).relative_to(root).as_posix() + "/"] = ""
        for f in filenames:
            p = Path(dirpath, f)
            out[p.relative_to(root).as_posix()] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def open_tiny(root: Path, **kw) -> RunFolder:
    kw.setdefault("command", "tests.cmd")
    kw.setdefault("config", CFG)
    kw.setdefault("volatile", ("max_steps",))
    return RunFolder.open(root, **kw)


# ----------------------------------------------------------------------------------------------
# Hashes, fingerprints, provenance
# ----------------------------------------------------------------------------------------------


def test_file_sha256_and_path_digests(tmp_path: Path):
    f = tmp_path / "d" / "a.bin"
    f.parent.mkdir()
    data = bytes(range(256)) * 5000  # > one 1 MiB chunk
    f.write_bytes(data)
    (tmp_path / "d" / "sub").mkdir()
    (tmp_path / "d" / "sub" / "b.txt").write_text("hello")
    assert file_sha256(f) == sha(data)
    assert path_digest(f) == "sha256:" + sha(data)

    d = tmp_path / "d"
    expect = hashlib.sha256(f"a.bin\0{len(data)}\0{sha(data)}\nsub/b.txt\0{5}\0{sha(b'hello')}\n".encode())
    assert path_digest(d) == "dir-sha256:" + expect.hexdigest()
    listing = path_digest(d, content_limit=0)
    assert listing == "dir-list:" + sha(f"a.bin\0{len(data)}\nsub/b.txt\0{5}\n".encode())
    # Run metadata and temporaries do not change a folder's fingerprint.
    (d / MANIFEST).write_text("{}")
    (d / LOCK).write_text("{}")
    (d / ".a.bin.x.partial").write_text("half")
    assert path_digest(d) == "dir-sha256:" + expect.hexdigest()
    # A same-size edit changes the content digest but not the listing one; a new file changes both.
    (d / "sub" / "b.txt").write_text("jello")
    assert path_digest(d) != "dir-sha256:" + expect.hexdigest()
    assert path_digest(d, content_limit=0) == listing
    (d / "c.txt").write_text("")
    assert path_digest(d, content_limit=0) != listing

    assert fingerprint({"weights": f}) == {"weights": "sha256:" + sha(data)}
    assert fingerprint([f]) == {str(f): "sha256:" + sha(data)}
    with pytest.raises(FileNotFoundError, match="nothing.npy"):
        path_digest(tmp_path / "nothing.npy")


def test_provenance_round_trip_and_mismatch_names_both_sides(tmp_path: Path):
    ckpt, vecs = tmp_path / "net.pth", tmp_path / "vecs.npy"
    ckpt.write_bytes(b"weights v1")
    vecs.write_bytes(b"motion")
    prov = Provenance.of({"vq_checkpoint": ckpt, "motion": vecs})
    prov.save(tmp_path / "codes" / "provenance.json")
    loaded = Provenance.load(tmp_path / "codes" / "provenance.json")
    assert loaded.hashes == {
        "vq_checkpoint": "sha256:" + sha(b"weights v1"),
        "motion": "sha256:" + sha(b"motion"),
    }
    loaded.check(Provenance.of({"vq_checkpoint": ckpt}), what="codes")  # a subset is checked

    ckpt.write_bytes(b"weights v2")
    with pytest.raises(ProvenanceError) as err:
        loaded.check(Provenance.of({"vq_checkpoint": ckpt, "motion": vecs}), what="code files in codes/")
    msg = str(err.value)
    assert "code files in codes/" in msg and "vq_checkpoint" in msg and "motion" not in msg.split(":", 1)[1]
    assert sha(b"weights v1") in msg and sha(b"weights v2") in msg
    with pytest.raises(ProvenanceError, match="word_vectors: not recorded"):
        check_provenance({"a": "sha256:1"}, {"word_vectors": "sha256:2"}, what="evaluator")
    with pytest.raises(ProvenanceError, match="not found"):
        Provenance.load(tmp_path / "missing.json")


def test_config_diff_names_dotted_keys_and_skips_volatile():
    new = {**CFG, "lr": 0.002, "model": {"depth": 3, "width": 16}, "max_steps": 5, "extra": True}
    assert config_diff(CFG, new, volatile=("max_steps",)) == [
        ("extra", "<absent>", True),
        ("lr", 0.001, 0.002),
        ("model.depth", 2, 3),
    ]


# ----------------------------------------------------------------------------------------------
# Atomic writes
# ----------------------------------------------------------------------------------------------


def _boom(fh):
    fh.write(b"half of the new content")
    raise RuntimeError("writer failed")


def test_atomic_write_keeps_target_on_error(tmp_path: Path):
    target = tmp_path / "sub" / "f.bin"
    assert atomic_write(target, lambda fh: fh.write(b"old")) == sha(b"old")
    with pytest.raises(RuntimeError, match="writer failed"):
        atomic_write(target, _boom)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in target.parent.iterdir()) == ["f.bin"]  # temporary removed
    # A torch object that cannot be pickled fails inside torch.save: same guarantee.
    with pytest.raises(Exception):  # noqa: B017 - pickling errors differ between torch versions
        atomic_torch_save({"f": lambda: 0}, target)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in target.parent.iterdir()) == ["f.bin"]


def test_atomic_helpers_write_loadable_files(tmp_path: Path):
    arr = np.arange(12, dtype=np.float32).reshape(3, 4)
    digest = atomic_save_npy(tmp_path / "a.npy", arr)
    assert digest == sha((tmp_path / "a.npy").read_bytes())
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), arr)
    atomic_torch_save({"w": torch.ones(2)}, tmp_path / "m.pt")
    assert torch.equal(torch.load(tmp_path / "m.pt", weights_only=True)["w"], torch.ones(2))
    atomic_write_json(tmp_path / "x.json", {"k": [1, 2]})
    assert json.loads((tmp_path / "x.json").read_text()) == {"k": [1, 2]}
    assert atomic_write_text(tmp_path / "t.txt", "é") == sha("é".encode())


# ----------------------------------------------------------------------------------------------
# Run folders
# ----------------------------------------------------------------------------------------------


def test_new_run_writes_manifest_and_records_files(tmp_path: Path):
    out = tmp_path / "run"
    with open_tiny(
        out, inputs={"mean": _file(tmp_path / "mean.bin", b"m")}, start_files={"config.yaml": "lr: 1\n"}
    ) as run:
        assert not run.resumed and run.previous_status is None
        run.write_text("a.txt", "alpha")
        run.save_npy("meta/mean.npy", np.zeros(3, np.float32))
        run.save_torch("net.pth", {"w": torch.zeros(1)})
        run.write_json("r.json", {"x": 1})
        with run.path("metrics.jsonl").open("a") as fh:  # a library writing itself
            fh.write('{"step": 1}\n')
        run.done()
    m = read_manifest(out)
    assert m["command"] == "tests.cmd" and m["status"] == "done" and m["finished"]
    assert m["config"] == CFG and m["volatile"] == ["max_steps"] and len(m["config_hash"]) == 64
    assert m["inputs"] == {"mean": {"path": str(tmp_path / "mean.bin"), "digest": "sha256:" + sha(b"m")}}
    assert set(m["files"]) == {"config.yaml", "a.txt", "meta/mean.npy", "net.pth", "r.json", "metrics.jsonl"}
    assert m["files"]["a.txt"]["sha256"] == sha(b"alpha") and m["files"]["a.txt"]["size"] == 5
    assert m["files"]["metrics.jsonl"]["sha256"] == sha(b'{"step": 1}\n')
    assert (out / "config.yaml").read_text() == "lr: 1\n"
    assert len(m["attempts"]) == 1 and m["attempts"][0]["status"] == "done"
    assert not (out / LOCK).exists()
    assert not [p for p in out.rglob("*.partial")]
    # Same command and config again: finished, and nothing is written.
    before = tree(out)
    with open_tiny(out, config={**CFG, "max_steps": 7}, inputs={"mean": tmp_path / "mean.bin"}) as run:
        assert run.finished and run.has("a.txt") and run.missing_files() == []
        assert run.read_json("r.json") == json.loads((out / "r.json").read_bytes())  # no new attempt
        with pytest.raises(FileNotFoundError, match="not a recorded file"):
            run.read_json("nope.json")
    assert tree(out) == before
    # path() is for writers: it begins an attempt, so the folder changes (read_json is the reader's way).
    with open_tiny(out, config={**CFG, "max_steps": 7}, inputs={"mean": tmp_path / "mean.bin"}) as run:
        run.path("r.json")
    assert tree(out) != before


def _file(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _finished_run(out: Path) -> None:
    with open_tiny(out) as run:
        run.write_text("a.txt", "alpha")
        run.done()


@pytest.mark.parametrize(
    "case",
    ["other_command", "other_config", "foreign_files", "changed_input", "corrupt_manifest"],
)
def test_refusals_leave_the_folder_byte_identical(tmp_path: Path, case: str):
    out = tmp_path / "run"
    inp = _file(tmp_path / "in.bin", b"v1")
    if case == "foreign_files":
        (out / "new_joint_vecs").mkdir(parents=True)
        (out / "new_joint_vecs" / "000000.npy").write_bytes(b"real motion")
        (out / "Mean.npy").write_bytes(b"real mean")
    elif case == "corrupt_manifest":
        out.mkdir()
        (out / MANIFEST).write_text("{not json")
    else:
        with open_tiny(out, inputs={"data": inp}) as run:
            run.write_text("a.txt", "alpha")
            run.done()
    before = tree(out)
    kwargs = {"inputs": {"data": inp}}
    if case == "other_command":
        kwargs["command"] = "prepare.train_evaluator"
        match = r"holds a tests\.cmd run .*not a prepare\.train_evaluator run.*overwrite=true"
    elif case == "other_config":
        kwargs["config"] = {**CFG, "dataset_root": "/data/b", "model": {"depth": 3, "width": 16}}
        match = (
            r"dataset_root was \"/data/a\" and is \"/data/b\" now; model\.depth was 2 and is 3.*resume=false"
        )
    elif case == "foreign_files":
        match = r"did not write \(Mean\.npy, new_joint_vecs/000000\.npy\).*overwrite=true"
    elif case == "changed_input":
        inp.write_bytes(b"v2")
        match = rf"input data \({inp}\) was sha256:{sha(b'v1')} and is sha256:{sha(b'v2')} now"
    else:
        match = "unreadable run manifest"
    with pytest.raises(RunFolderError, match=match) as err:
        open_tiny(out, **kwargs)
    assert str(out) in str(err.value)
    assert tree(out) == before


def test_failure_before_the_first_write_leaves_nothing(tmp_path: Path):
    out = tmp_path / "a" / "b" / "run"
    with pytest.raises(ValueError, match="bad input"):
        with open_tiny(out):
            raise ValueError("bad input")  # e.g. input validation inside the block
    assert not (tmp_path / "a").exists()


def test_exception_marks_failed_and_resume_continues(tmp_path: Path):
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        with open_tiny(out) as run:
            run.write_text("a.txt", "alpha")
            raise KeyboardInterrupt
    m = read_manifest(out)
    assert m["status"] == "failed" and m["attempts"][-1]["error"] == "KeyboardInterrupt: "
    assert not (out / LOCK).exists()
    with open_tiny(out, config={**CFG, "max_steps": 3}) as run:
        assert run.resumed and not run.finished and run.previous_status == "failed"
        assert run.has("a.txt")
        run.write_text("b.txt", "beta")
        run.done()
    m = read_manifest(out)
    assert m["status"] == "done" and set(m["files"]) == {"a.txt", "b.txt"} and len(m["attempts"]) == 2
    # Leaving the block without done() (e.g. max_steps reached) is "stopped".
    with open_tiny(out, resume=False) as run:
        run.write_text("a.txt", "alpha 2")
    assert read_manifest(out)["status"] == "stopped"


def test_restart_removes_only_its_own_unchanged_files(tmp_path: Path):
    out = tmp_path / "run"
    with open_tiny(out) as run:
        for name in ("keep.txt", "old.txt", "edited.txt"):
            run.write_text(name, name)
        run.done()
    (out / "user_notes.txt").write_text("mine")  # not written by the run
    (out / "edited.txt").write_text("edited by hand, longer")
    new_cfg = {**CFG, "lr": 0.5}
    with open_tiny(out, config=new_cfg, resume=False) as run:
        assert not run.resumed
        run.write_text("keep.txt", "rewritten")
        assert (out / "old.txt").exists()  # removed only when the new run is done
        run.done()
    assert sorted(p.name for p in out.iterdir() if p.name != MANIFEST) == [
        "edited.txt",
        "keep.txt",
        "user_notes.txt",
    ]
    assert (out / "user_notes.txt").read_text() == "mine"
    m = read_manifest(out)
    assert m["config"]["lr"] == 0.5 and set(m["files"]) == {"keep.txt"} and m["stale"] == {}


def test_overwrite_writes_beside_foreign_files_and_never_deletes_them(tmp_path: Path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "theirs.txt").write_text("theirs")
    (out / "a.txt").write_text("old a")
    with open_tiny(out, overwrite=True) as run:
        run.write_text("a.txt", "new a")
        run.done()
    assert (out / "theirs.txt").read_text() == "theirs" and (out / "a.txt").read_text() == "new a"
    assert set(read_manifest(out)["files"]) == {"a.txt"}
    # Another command's run with overwrite: its files stay.
    with open_tiny(out, command="other.cmd", overwrite=True) as run:
        run.write_text("b.txt", "b")
        run.done()
    assert sorted(p.name for p in out.iterdir()) == ["a.txt", "b.txt", MANIFEST, "theirs.txt"]
    assert read_manifest(out)["command"] == "other.cmd"


def test_other_ranks_neither_lock_nor_write(tmp_path: Path):
    out = tmp_path / "run"
    _finished_run(out)
    before = tree(out)
    with open_tiny(out, main_process=False) as run:
        assert run.finished  # same branch as rank 0
        assert run.write_text("x.txt", "x") == out / "x.txt"
        run.done()
    with open_tiny(tmp_path / "new", main_process=False) as run:
        run.save_npy("a.npy", np.zeros(2))
    assert tree(out) == before and not (tmp_path / "new").exists()
    plain = OutputFolder(tmp_path / "plain", main_process=False)
    plain.write_text("a.txt", "a")
    assert not (tmp_path / "plain").exists()
    with pytest.raises(ValueError, match="not a path inside"):
        OutputFolder(tmp_path).write_text("../escape.txt", "x")


# ----------------------------------------------------------------------------------------------
# Two processes, killed processes
# ----------------------------------------------------------------------------------------------

_CHILD = textwrap.dedent(
    """
    import sys
    from data.run_folder import RunFolder
    cfg = {"lr": 0.001, "model": {"depth": 2, "width": 16}, "max_steps": 0, "dataset_root": "/data/a"}
    run = RunFolder.open(sys.argv[1], command="tests.cmd", config=cfg, volatile=("max_steps",))
    run.write_text("a.txt", "alpha")
    if sys.argv[2] == "hold":
        print("locked", flush=True)
        sys.stdin.read()
        run.done()
        run.close()
    else:  # stop in the middle of writing b.bin
        def writer(fh):
            fh.write(b"x" * 1000)
            fh.flush()
            print("writing", flush=True)
            sys.stdin.read()
        run.write_with("b.bin", writer)
    """
)


def _child(out: Path, mode: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(out), mode],
        cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    line = proc.stdout.readline().strip()
    assert line in ("locked", "writing"), f"child failed: {line!r}"
    return proc


def test_second_process_fails_at_once_while_the_first_holds_the_lock(tmp_path: Path):
    out = tmp_path / "run"
    proc = _child(out, "hold")
    try:
        before = tree(out)
        with pytest.raises(RunFolderError, match=rf"locked by tests\.cmd \(pid {proc.pid} on"):
            open_tiny(out)
        assert tree(out) == before
    finally:
        proc.stdin.close()
        assert proc.wait() == 0
    with open_tiny(out) as run:  # released: the run is finished, same config
        assert run.finished


def test_killed_run_leaves_no_half_file_and_resumes(tmp_path: Path, caplog):
    out = tmp_path / "run"
    proc = _child(out, "kill")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    m = read_manifest(out)
    assert m["status"] == "running" and json.loads((out / LOCK).read_text())["pid"] == proc.pid
    assert not (out / "b.bin").exists()
    partial = [p.name for p in out.iterdir() if p.name.endswith(".partial")]
    assert len(partial) == 1 and partial[0].startswith(".b.bin." + m["run_id"])
    with caplog.at_level(logging.WARNING, logger="data.run_folder"):
        with open_tiny(out) as run:
            assert run.resumed and run.previous_status == "running" and run.has("a.txt")
            run.write_bytes("b.bin", b"complete")
            run.done()
    assert f"pid {proc.pid}" in caplog.text and "no longer running" in caplog.text
    assert sorted(p.name for p in out.iterdir()) == ["a.txt", "b.bin", MANIFEST]
    m = read_manifest(out)
    assert m["status"] == "done" and [a["status"] for a in m["attempts"]] == ["interrupted", "done"]


# ----------------------------------------------------------------------------------------------
# data.runtime
# ----------------------------------------------------------------------------------------------


def test_open_run_writes_config_and_run_info_at_the_first_write(tmp_path: Path):
    out = tmp_path / "run"
    with open_run(out, command="tests.cmd", config={"a": 1, "b": [1, 2]}, seed=9) as run:
        assert not out.joinpath("config.yaml").exists()
        run.write_text("x.txt", "x")
        run.done()
    assert (out / "config.yaml").read_text() == "a: 1\nb:\n- 1\n- 2\n"
    assert json.loads((out / "run_info.json").read_text())["seed"] == 9
    m = read_manifest(out)
    assert m["info"] == {"seed": 9} and set(m["files"]) == {"config.yaml", "run_info.json", "x.txt"}


# ----------------------------------------------------------------------------------------------
# python -m data.synth
# ----------------------------------------------------------------------------------------------


def _synth(out: Path, *flags: str) -> dict:
    from data.synth.__main__ import main

    return main(["--out", str(out), "--workers", "1", "--no-progress", *flags])


def test_synth_refuses_a_dataset_it_did_not_build(make_tiny_dataset):
    real = make_tiny_dataset("HumanML3D")  # a slip like --out dataset/HumanML3D
    before = tree(real)
    for flags in ((), ("--force",)):
        with pytest.raises(RunFolderError, match=r"did not write \(.*\).*--overwrite.*another --out"):
            _synth(real, "--num", "20", *flags)
        assert tree(real) == before


def test_synth_overwrite_never_deletes_foreign_files(make_tiny_dataset):
    root = make_tiny_dataset("mixed")
    (root / "new_joint_vecs" / "M000001.npy").write_bytes(b"a KIT-style id of another build")
    (root / "README.txt").write_text("notes")
    foreign = {k: v for k, v in tree(root).items() if "M000001" in k or k == "README.txt"}
    _synth(root, "--num", "21", "--overwrite")
    vecs = root / "new_joint_vecs"
    assert (vecs / "000020.npy").is_file() and read_manifest(root)["command"] == "data.synth"
    # Rebuild with fewer motions: the build's own 000020 files go, the foreign ones stay.
    _synth(root, "--num", "20", "--force")
    assert not (vecs / "000020.npy").exists() and not (root / "texts" / "000020.txt").exists()
    assert {k: v for k, v in tree(root).items() if "M000001" in k or k == "README.txt"} == foreign
    assert sorted(p.name for p in vecs.iterdir())[-2:] == ["000019.npy", "M000001.npy"]
    m = read_manifest(root)
    assert (
        m["status"] == "done" and m["config"]["num"] == 20 and len(m["files"]) == 20 * 4 + 8
    )  # + 5 splits, Mean, Std, marker
    # Other parameters without --force: refused, naming the key; the folder is unchanged.
    before = tree(root)
    with pytest.raises(RunFolderError, match=r"seed was 0 and is 5 now.*--force"):
        _synth(root, "--num", "20", "--seed", "5")
    assert tree(root) == before


# ----------------------------------------------------------------------------------------------
# python -m prepare.train_vq
# ----------------------------------------------------------------------------------------------

_VQ_ARGS = ("model.width=16", "model.code_dim=16", "model.output_emb_width=16", "model.nb_code=32",
            "model.depth=1", "batch_size=4", "window_size=16", "warmup_iters=2", "total_iters=3",
            "progress=false", "num_threads=0")  # fmt: skip


def _train_vq(root: Path, out: Path, *extra: str) -> dict:
    from prepare import train_vq

    config = REPO / "configs" / "tiny" / "vq.yaml"
    return train_vq.main(
        ["--config", str(config), f"dataset_root={root}", f"output_dir={out}", *_VQ_ARGS, *extra]
    )


def test_train_vq_rerun_with_another_dataset_is_refused(make_tiny_dataset, tmp_path: Path):
    first, second = make_tiny_dataset("a"), make_tiny_dataset("b", seed=1)
    out = tmp_path / "vq"
    result = _train_vq(first, out)
    m = read_manifest(out)
    assert m["command"] == "prepare.train_vq" and m["status"] == "done"
    assert m["inputs"]["mean_file"]["digest"] == "sha256:" + sha((first / "Mean.npy").read_bytes())
    assert {"config.yaml", "run_info.json", "meta/mean.npy", "meta/std.npy", "net_last.pth", "resume_last.pt",
            "metrics.jsonl", "eval_test.json"} <= set(m["files"])  # fmt: skip
    before = tree(out)
    with pytest.raises(RunFolderError) as err:
        _train_vq(second, out)
    msg = str(err.value)
    assert f'dataset_root was "{first}" and is "{second}" now' in msg and "input mean_file" in msg
    assert "resume=false" in msg and str(out) in msg
    assert tree(out) == before  # meta/{mean,std}.npy and config.yaml untouched
    # The same command again returns the stored result without writing.
    assert _train_vq(first, out, "num_threads=1", "device=cpu") == result
    assert tree(out) == before
    # resume=false starts the run over on the new data.
    _train_vq(second, out, "resume=false")
    np.testing.assert_array_equal(np.load(out / "meta" / "mean.npy"), np.load(second / "Mean.npy"))
    assert read_manifest(out)["config"]["dataset_root"] == str(second)


def test_train_vq_failed_resume_check_leaves_config_untouched(make_tiny_dataset, tmp_path: Path):
    root = make_tiny_dataset()
    out = tmp_path / "vq"
    assert _train_vq(root, out, "max_steps=2") == {}  # stopped after 2 of 4 steps
    assert read_manifest(out)["status"] == "stopped"
    before = tree(out)
    with pytest.raises(
        RunFolderError, match=r"lr was 0\.001 and is 0\.5 now; model\.depth was 1 and is 2 now"
    ):
        _train_vq(root, out, "model.depth=2", "lr=0.5")
    assert tree(out) == before
    # Another command pointed at the folder is refused too.
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "data.npy").write_bytes(b"x")
    with pytest.raises(RunFolderError, match="overwrite=true"):
        _train_vq(root, tmp_path / "elsewhere")
    # The interrupted run resumes to the end.
    result = _train_vq(root, out)
    m = read_manifest(out)
    assert result["step"] == 4 and m["status"] == "done" and len(m["attempts"]) == 2
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and steps[-1] == 4
