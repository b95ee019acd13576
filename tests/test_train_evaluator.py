"""prepare/train_evaluator.py end to end on a tiny dataset; evaluator meta rule; loss pieces."""

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from data.config import load_config
from data.run_folder import ProvenanceError, RunFolder, RunFolderError, file_sha256
from data.specs import get_dataset_spec
from data.vq_data import Clip, MotionWindows
from data.word_vector_build import word_vectors_digest
from eval.evaluate import main as evaluate_main
from eval.harness import EvalConfig
from eval.scoring import MotionTextScorer
from models.evaluator import (
    MovementConvDecoder,
    MovementConvEncoder,
    check_evaluator_provenance,
    load_guo_evaluator,
)
from models.evaluator_training import (
    EvaluatorTrainConfig,
    MovementAEConfig,
    contrastive_loss,
    evaluator_meta,
    negative_shift,
    train_movement_autoencoder,
)
from prepare.train_evaluator import main
from tests.conftest import write_tiny_dataset, write_tiny_glove
from tests.test_harness import _clips

REPO = Path(__file__).resolve().parent.parent


def test_evaluator_meta_rule():
    spec = get_dataset_spec("kit")
    mean, std = np.arange(251, dtype=np.float32), np.ones(251, np.float32)
    m, s = evaluator_meta(mean, std, spec, feat_bias=5.0)
    np.testing.assert_array_equal(m, mean)
    assert (s[:4] == 0.2).all() and (s[-4:] == 0.2).all() and (s[4:-4] == 1).all() and (std == 1).all()


def test_losses_and_shift():
    a = torch.zeros(3, 2)
    b = torch.tensor([[3.0, 4.0], [0.0, 0.0], [0.0, 12.0]])  # distances 5, 0, 12
    assert contrastive_loss(a, b, negative=False, margin=10).item() == pytest.approx(
        (25 + 0 + 144) / 3, rel=1e-5
    )
    assert contrastive_loss(a, b, negative=True, margin=10).item() == pytest.approx(
        (25 + 100 + 0) / 3, rel=1e-4
    )
    shifts = {negative_shift(4, 0, 0, k) for k in range(200)}
    assert shifts == {1, 2, 3}  # never 0: a shift of 0 would label positives as negatives


def test_movement_autoencoder_learns_smooth_motion():
    torch.manual_seed(0)
    t = np.arange(48)[:, None] / 8.0
    clips = [Clip(f"{i}", np.sin(t * (1 + i % 5) * 0.3 + np.arange(20)[None, :]).astype(np.float32))
             for i in range(16)]  # fmt: skip
    windows = MotionWindows(clips, window=24, batch_size=8, seed=0)
    enc, dec = MovementConvEncoder(16, 32, 16), MovementConvDecoder(16, 32, 20)
    cfg = MovementAEConfig(window=24, batch_size=8, iters=150, lr=3e-3, log_every=149)
    with torch.no_grad():
        before = torch.nn.functional.l1_loss(dec(enc(windows.batch(0)[..., :-4])), windows.batch(0)).item()
    after = train_movement_autoencoder(windows, enc, dec, cfg, progress=False)
    assert after["rec"] < 0.3 * before and not enc.training


@pytest.mark.parametrize("name", ["tiny", "humanml3d", "kit"])
def test_configs_load(name: str):
    cfg = load_config(EvaluatorTrainConfig, REPO / "configs" / name / "evaluator.yaml")
    assert cfg.margin == 10.0 and cfg.batch_size == 32
    ev = load_config(EvalConfig, REPO / "configs" / name / "eval.yaml")
    assert ev.batch_size == 32 and ev.split == "test"


def _tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (run metadata and temporaries included) with its bytes."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _args(ds: Path, glove: Path, out: Path) -> list[str]:
    return [
        f"dataset_root={ds}", f"glove_dir={glove}", f"output_dir={out}", "batch_size=4", "epochs=2",
        "model={dim_text_hidden: 8, dim_motion_hidden: 8, dim_coemb: 16, dim_movement_enc_hidden: 8, "
        "dim_movement_latent: 8, dim_movement_dec_hidden: 8}",
        "movement.iters=30", "movement.batch_size=8", "movement.lr=0.01", "movement.log_every=29",
        "final_replications=1", "final_diversity_times=10", "progress=false", "num_threads=1",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    """One tiny evaluator run (30 clips: 20 train, 10 val); read-only for the tests below."""
    root = tmp_path_factory.mktemp("train_evaluator")
    ds = write_tiny_dataset(root / "ds", clips=_clips())
    ids = (ds / "all.txt").read_text().split()
    (ds / "train.txt").write_text("\n".join(ids[:20]) + "\n")
    (ds / "val.txt").write_text("\n".join(ids[20:]) + "\n")
    glove = write_tiny_glove(root / "glove")
    out = root / "ev"
    args = _args(ds, glove, out)
    return {"root": root, "ds": ds, "glove": glove, "out": out, "args": args, "summary": main(args)}


def test_train_evaluator_end_to_end(trained):
    ds, glove, out, summary = trained["ds"], trained["glove"], trained["out"], trained["summary"]
    for f in ("finest.tar", "meta/mean.npy", "meta/std.npy", "movement_ae.pt", "metrics.jsonl", "config.yaml",
              "train_result.json", "eval_test.json", "eval_test.md", "provenance.json", "run.json"):  # fmt: skip
        assert (out / f).is_file(), f
    ev = load_guo_evaluator(out / "finest.tar", "humanml3d")
    assert ev.dim == 16 and ev.epoch == summary["best"]["best_epoch"]
    ck = torch.load(out / "finest.tar", weights_only=True)
    assert {"text_encoder", "motion_encoder", "movement_encoder", "opt_text_encoder", "opt_motion_encoder",
            "epoch", "iter"} == set(ck)  # fmt: skip
    # The frozen movement encoder inside finest.tar is the pre-trained one.
    ae = torch.load(out / "movement_ae.pt", weights_only=True)
    for k, v in ae["movement_encoder"].items():
        torch.testing.assert_close(ck["movement_encoder"][k], v)
    log = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in log if x["stage"] == "movement_ae"] == [0, 29]
    assert [x["epoch"] for x in log if x["stage"] == "matching"] == [0, 1]
    assert set(summary["ground_truth"]) == {"top1", "top2", "top3", "fid", "mm_dist", "diversity"}
    std = np.load(out / "meta" / "std.npy")
    np.testing.assert_allclose(std[:4] * 5, np.load(ds / "Std.npy")[:4], rtol=1e-6)

    # Provenance: the content hashes of the word vectors and of the written meta.
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["provenance"] == {
        "word_vectors": word_vectors_digest(glove),
        "mean": "sha256:" + file_sha256(out / "meta" / "mean.npy"),
        "std": "sha256:" + file_sha256(out / "meta" / "std.npy"),
    }
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["command"] == "prepare.train_evaluator" and manifest["status"] == "done"
    assert {"finest.tar", "provenance.json", "meta/mean.npy", "train_result.json", "eval_test.json",
            "metrics.jsonl"} <= set(manifest["files"])  # fmt: skip
    assert manifest["inputs"]["word_vectors/our_vab_data.npy"]["digest"] == "sha256:" + file_sha256(
        glove / "our_vab_data.npy"
    )

    # Counted, not silent: 20 train clips of 40-119 frames, all >= the 24-frame window; batches of 4.
    counts = summary["counts"]
    assert counts["train_index"]["ids"] == 20 and counts["train_index"]["skipped_files"] == 0
    assert counts["movement_entries_too_short"] == 0
    assert counts["train_items_left_out_per_epoch"] == summary["train_items"] % 4
    assert counts["val_items_left_out"] == summary["val_items"] % 4 == 2  # 10 val items
    assert counts["final_eval"]["items_not_scored_per_replication"] == 30 % 4 == 2
    assert json.loads((out / "train_result.json").read_text()) == json.loads(json.dumps(summary))


def test_rerun_of_a_finished_run_skips_and_writes_nothing(trained):
    before = _tree(trained["out"])
    again = main(trained["args"])
    assert again == json.loads((trained["out"] / "train_result.json").read_text())
    assert _tree(trained["out"]) == before  # not even run.json was touched


def test_other_config_is_refused_then_force_retrains(trained, tmp_path: Path):
    out = tmp_path / "ev"
    shutil.copytree(trained["out"], out)
    args = _args(trained["ds"], trained["glove"], out)
    before = _tree(out)
    with pytest.raises(RunFolderError, match=r"epochs was 2 and is 1 now.*pass force=true"):
        main([*args, "epochs=1", "final_split="])
    assert _tree(out) == before
    # word vectors from another build are another input: refused the same way
    other = write_tiny_glove(tmp_path / "glove2", seed=1)
    with pytest.raises(RunFolderError, match=r"input word_vectors/our_vab_data.npy"):
        main([*args[:1], f"glove_dir={other}", *args[2:]])
    assert _tree(out) == before
    summary = main([*args, "epochs=1", "final_split=", "force=true"])
    assert summary["best"]["best_epoch"] == 0 and "ground_truth" not in summary
    assert not (out / "eval_test.json").exists()  # the superseded run's file is removed by done()
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["config"]["epochs"] == 1 and [a["status"] for a in manifest["attempts"]] == ["done"] * 2


def test_refuses_a_vq_run_folder_and_foreign_files(trained, tmp_path: Path):
    vq = tmp_path / "vq"
    with RunFolder.open(vq, command="prepare.train_vq", config={"total_iters": 3}) as run:
        run.save_npy("meta/mean.npy", np.zeros(263, np.float32))
        run.write_bytes("net_last.pth", b"weights")
        run.write_text("config.yaml", "total_iters: 3\n")
        run.done()
    before = _tree(vq)
    args = _args(trained["ds"], trained["glove"], vq)
    with pytest.raises(
        RunFolderError, match=r"holds a prepare.train_vq run .* not a prepare.train_evaluator run"
    ):
        main(args)
    assert _tree(vq) == before

    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "finest.tar").write_bytes(b"a released evaluator")
    with pytest.raises(RunFolderError, match=r"files that prepare.train_evaluator did not write \(finest.tar\).*"
                                             r"pass overwrite=true"):  # fmt: skip
        main(_args(trained["ds"], trained["glove"], plain))
    assert _tree(plain) == {"finest.tar": b"a released evaluator"}


def _eval_args(trained, out: Path, glove: Path, meta: Path | None = None) -> list[str]:
    ev = trained["out"]
    return [f"dataset_root={trained['ds']}", f"glove_dir={glove}", f"evaluator_checkpoint={ev / 'finest.tar'}",
            f"evaluator_meta_dir={meta or ev / 'meta'}", f"output_dir={out}", "batch_size=4", "replications=1",
            "diversity_times=10", "progress=false", "num_threads=1"]  # fmt: skip


def test_word_vectors_from_another_build_are_an_error_naming_both_hashes(trained, tmp_path: Path):
    other = write_tiny_glove(tmp_path / "glove2", seed=1)  # same words, other vectors
    trained_with, given = word_vectors_digest(trained["glove"]), word_vectors_digest(other)
    assert trained_with != given
    with pytest.raises(ProvenanceError) as err:
        evaluate_main(_eval_args(trained, tmp_path / "eval", other))
    msg = str(err.value)
    assert (
        f"word_vectors: trained with {trained_with} ({trained['glove']}), glove_dir={other} has {given}"
        in msg
    )
    assert "Set glove_dir to the files it was trained with" in msg
    assert not (tmp_path / "eval").exists()  # checked before the first write; the new folder is removed
    with pytest.raises(ProvenanceError, match=given):
        MotionTextScorer.from_files(
            trained["out"] / "finest.tar", trained["out"] / "meta", other, "humanml3d"
        )

    # another mean/std (here: the dataset's, not the evaluator's) is refused the same way
    meta = tmp_path / "meta"
    meta.mkdir()
    shutil.copy(trained["ds"] / "Mean.npy", meta / "mean.npy")
    shutil.copy(trained["ds"] / "Std.npy", meta / "std.npy")
    with pytest.raises(ProvenanceError, match=r"std: trained with sha256:\w+ .*Set evaluator_meta_dir"):
        evaluate_main(_eval_args(trained, tmp_path / "eval", trained["glove"], meta))

    # the right ones: checked and recorded in the evaluation JSON
    res = evaluate_main(_eval_args(trained, tmp_path / "eval", trained["glove"]))
    assert res["evaluator_provenance"]["checked"] is True
    assert res["evaluator_provenance"]["digests"]["word_vectors"] == trained_with
    scorer = MotionTextScorer.from_files(
        trained["out"] / "finest.tar", trained["out"] / "meta", trained["glove"], "humanml3d"
    )
    assert scorer.provenance["checked"] is True


def test_released_evaluator_without_a_record_warns_once(trained, tmp_path: Path, caplog):
    released = tmp_path / "released"
    released.mkdir()
    shutil.copy(trained["out"] / "finest.tar", released / "finest.tar")
    caplog.set_level(logging.WARNING, logger="models.evaluator")
    for _ in range(2):
        res = check_evaluator_provenance(released / "finest.tar", glove_dir=trained["glove"])
        assert res == {"checked": False, "record": None,
                       "digests": {"word_vectors": word_vectors_digest(trained["glove"])}}  # fmt: skip
    warnings = [r for r in caplog.records if "has no provenance.json" in r.getMessage()]
    assert len(warnings) == 1
