"""Output folders of eval.vq_reconstruct and eval.render: owned run folder, atomic files, reruns."""

import json
from pathlib import Path

import numpy as np
import pytest

from data.run_folder import RunFolderError
from data.specs import get_dataset_spec
from eval import render, vq_reconstruct
from models.vqvae import MotionVQVAE, VQVAEConfig

SPEC = get_dataset_spec("humanml3d")


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def vq(tmp_path: Path, tiny_dataset: Path) -> Path:
    """A random tiny VQ-VAE with the dataset's mean/std as its meta."""
    model = MotionVQVAE(
        SPEC.feat_dim, VQVAEConfig(nb_code=16, code_dim=8, output_emb_width=8, width=8, depth=1)
    )
    model.quantizer.mark_initialised()
    model.save_checkpoint(tmp_path / "vq" / "net_last.pth")
    (tmp_path / "vq" / "meta").mkdir()
    np.save(tmp_path / "vq" / "meta" / "mean.npy", np.load(tiny_dataset / "Mean.npy"))
    np.save(tmp_path / "vq" / "meta" / "std.npy", np.load(tiny_dataset / "Std.npy"))
    return tmp_path / "vq" / "net_last.pth"


def test_vq_reconstruct_owns_its_folder_and_skips_a_finished_run(
    tiny_dataset: Path, vq: Path, tmp_path: Path
):
    out = tmp_path / "rec"
    args = [f"vq_checkpoint={vq}", f"dataset_root={tiny_dataset}", "ids=['000001']", f"output_dir={out}"]
    rec = vq_reconstruct.main(args)
    assert rec["clips"]["000001"]["n_frames"] == 120
    assert {p.name for p in out.iterdir()} == {"000001_gt.npy", "000001_recon.npy", "000001_codes.npy",
                                               "reconstruct.json", "config.yaml", "run_info.json", "run.json"}  # fmt: skip
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["command"] == "eval.vq_reconstruct" and manifest["status"] == "done"
    assert set(manifest["inputs"]) == {"vq_checkpoint", "mean_file", "std_file", "motion/000001"}

    # a GIF rendered into the folder afterwards (as the demo does) is left alone by a rerun
    render.render_motions([np.load(out / "000001_gt.npy")[:8]], out / "000001.gif", mp4="no")
    before = _tree(out)
    assert vq_reconstruct.main(args) == rec
    assert _tree(out) == before

    # a retrained checkpoint is another input: refused, naming it; resume=false redoes the run
    vq.write_bytes(vq.read_bytes() + b"\0")  # other bytes, same weights (torch ignores the tail)
    with pytest.raises(RunFolderError, match=r"input vq_checkpoint .* was sha256:\w+ and is sha256:"):
        vq_reconstruct.main(args)
    assert _tree(out) == before
    assert vq_reconstruct.main([*args, "resume=false"]) == rec
    assert (out / "000001.gif").read_bytes() == before["000001.gif"]  # not this command's file: kept


def test_vq_reconstruct_refuses_another_commands_folder(tiny_dataset: Path, vq: Path, tmp_path: Path):
    vq_run = vq.parent  # holds files vq_reconstruct did not write (checkpoint, meta)
    before = _tree(vq_run)
    with pytest.raises(RunFolderError, match=r"did not write .*net_last.pth.*overwrite=true"):
        vq_reconstruct.main([f"vq_checkpoint={vq}", f"dataset_root={tiny_dataset}", "ids=['000001']",
                             f"output_dir={vq_run}"])  # fmt: skip
    assert _tree(vq_run) == before


def test_interrupted_render_keeps_the_earlier_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    motion = np.random.default_rng(0).uniform(-0.5, 0.5, (6, SPEC.joints_num, 3)).astype(np.float32)
    target = tmp_path / "renders" / "m.gif"
    render.render_motions([motion], target, mp4="no")
    earlier = target.read_bytes()
    frame = render.MotionFigure.frame

    def failing(self, t):
        if t == 3:
            raise KeyboardInterrupt
        return frame(self, t)

    monkeypatch.setattr(render.MotionFigure, "frame", failing)
    with pytest.raises(KeyboardInterrupt):
        render.render_motions([motion[::-1]], target, mp4="no", still_frame=1)
    assert target.read_bytes() == earlier  # no half-written GIF replaced it
    assert sorted(p.name for p in target.parent.iterdir()) == ["m.frame1.png", "m.gif"]  # no temporaries
