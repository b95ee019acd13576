"""VQ-VAE tokenizer: released layout, shapes, variable-length batches, training, resume, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from data.config import load_config
from data.layout import DatasetFileError, SkipTracker
from data.normalization import FeatureNorm
from data.run_folder import RunFolderError
from data.runtime import set_seed
from data.specs import get_dataset_spec
from data.vq_data import MotionWindows, load_clips, read_code_file
from models.vq_tokenize import TokenizeConfig
from models.vq_training import VQTrainConfig, VQTrainer, lr_at
from models.vqvae import PAD_CODE, CheckpointError, MotionVQVAE, VQVAEConfig

TINY = VQVAEConfig(nb_code=32, code_dim=16, output_emb_width=16, width=16, depth=3)
HML = get_dataset_spec("humanml3d")
CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models gain nothing from threads, and OpenMP threads on a busy shared machine stall
    (the resume test took 38 s instead of 1 s with 2 threads on 2 contended cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _random_vq(nfeats: int = 263, seed: int = 0, cfg: VQVAEConfig = TINY) -> MotionVQVAE:
    """A tiny VQ with non-trivial random weights and codebook (eval mode)."""
    torch.manual_seed(seed)
    vq = MotionVQVAE(nfeats, cfg)
    with torch.no_grad():
        for p in vq.parameters():
            p.normal_(0.0, 0.15)
        vq.quantizer.codebook.normal_()
    return vq.eval()


def _released_keys(d: int) -> dict[str, tuple[int, ...]]:
    """The 67 keys and shapes listed in the spec (§3.4) for width 512, down_t 2, depth 3."""
    w = 512
    keys: dict[str, tuple[int, ...]] = {}

    def conv(name: str, cout: int, cin: int, k: int) -> None:
        keys[f"{name}.weight"], keys[f"{name}.bias"] = (cout, cin, k), (cout,)

    def resnet(prefix: str) -> None:
        for i in range(3):
            conv(f"{prefix}.model.{i}.conv1", w, w, 3)
            conv(f"{prefix}.model.{i}.conv2", w, w, 1)

    conv("vqvae.encoder.model.0", w, d, 3)
    for s in (2, 3):
        conv(f"vqvae.encoder.model.{s}.0", w, w, 4)
        resnet(f"vqvae.encoder.model.{s}.1")
    conv("vqvae.encoder.model.4", w, w, 3)
    conv("vqvae.decoder.model.0", w, w, 3)
    for s in (2, 3):
        resnet(f"vqvae.decoder.model.{s}.0")
        conv(f"vqvae.decoder.model.{s}.2", w, w, 3)
    conv("vqvae.decoder.model.4", w, w, 3)
    conv("vqvae.decoder.model.6", d, w, 3)
    keys["vqvae.quantizer.codebook"] = (512, 512)
    return keys


@pytest.mark.parametrize("nfeats", [263, 251])
def test_released_state_dict_keys_and_shapes(nfeats: int):
    with torch.device("meta"):
        vq = MotionVQVAE(nfeats)
    got = {k: tuple(v.shape) for k, v in vq.state_dict().items()}
    assert len(got) == 67
    assert got == _released_keys(nfeats)
    blocks = vq.vqvae.decoder.model[2][0].model
    assert [b.dilation for b in blocks] == [9, 3, 1]
    assert [b.conv1.padding[0] for b in vq.vqvae.encoder.model[3][1].model] == [9, 3, 1]


@pytest.mark.parametrize("t", [4, 7, 16, 64, 65, 66, 67])
def test_encode_decode_shapes(t: int):
    vq = _random_vq()
    codes = vq.encode(torch.randn(2, t, 263))
    assert codes.dtype == torch.long and codes.shape == (2, t // 4)
    assert int(codes.min()) >= 0 and int(codes.max()) < TINY.nb_code
    out = vq.decode(codes)
    assert out.shape == (2, 4 * (t // 4), 263) and out.dtype == torch.float32
    assert vq.decode(codes[0]).shape == (1, 4 * (t // 4), 263)  # one (N,) sequence


def test_trailing_frames_reach_back_through_the_receptive_field():
    """Frames past 4*(T//4) are not reconstructed but, through the dilated residual blocks, change
    the latents of the last ~22 codes (88 frames), not only the last one: callers crop first."""
    vq = _random_vq()
    x = torch.randn(1, 403, 263)
    z400, _ = vq.vqvae.encoder(x[:, :400].transpose(1, 2))
    z403, _ = vq.vqvae.encoder(x.transpose(1, 2))
    assert z400.shape == z403.shape == (1, 16, 100)
    changed = ((z400 - z403).abs().amax(dim=1)[0] > 1e-5).nonzero().flatten().tolist()
    assert changed == list(range(78, 100))


def test_batched_variable_length_equals_per_sample():
    vq = _random_vq(seed=1)
    codes = torch.randint(0, TINY.nb_code, (4, 12))
    n = torch.tensor([12, 1, 5, 9])
    codes[1, 1:] = PAD_CODE  # padding may hold anything, also out-of-range pad values
    out = vq.decode(codes, lengths=n)
    assert out.shape == (4, 48, 263)
    for b in range(4):
        alone = vq.decode(codes[b : b + 1, : n[b]])[0]
        torch.testing.assert_close(out[b, : 4 * n[b]], alone, rtol=0, atol=2e-5)
        assert out[b, 4 * n[b] :].abs().max() == 0 if n[b] < 12 else True
    as_list = vq.decode_list([codes[b, : n[b]] for b in range(4)])
    for b in range(4):
        torch.testing.assert_close(as_list[b], out[b, : 4 * n[b]], rtol=0, atol=2e-5)
    # Without masking, padded steps leak into valid frames: the test above is not vacuous.
    unmasked = vq.decode(codes.clamp_min(0))[2, : 4 * n[2]]
    assert (unmasked - out[2, :20]).abs().max() > 1e-3

    x = torch.randn(3, 50, 263)
    lengths = torch.tensor([50, 13, 4])
    x[1, 13:] = float("nan")  # padding is ignored, even when it is NaN
    enc = vq.encode(x, lengths=lengths)
    for b in range(3):
        alone = vq.encode(x[b : b + 1, : lengths[b]])[0]
        assert torch.equal(enc[b, : lengths[b] // 4], alone)
        assert (enc[b, lengths[b] // 4 :] == PAD_CODE).all()


def test_bad_inputs_raise_clear_errors():
    vq = _random_vq()
    with pytest.raises(ValueError, match="T=3 frames"):
        vq.encode(torch.randn(1, 3, 263))
    with pytest.raises(ValueError, match="D=251.*nfeats=263"):
        vq.encode(torch.randn(1, 8, 251))
    x = torch.randn(2, 8, 263)
    x[1, 5, 7] = float("nan")
    with pytest.raises(ValueError, match="NaN/inf in samples \\[1\\].*frame 5"):
        vq.encode(x)
    with pytest.raises(ValueError, match=r"outside 0..31; first at row 1, position 2: 32"):
        vq.decode(torch.tensor([[0, 1, 2], [3, 4, 32]]))
    with pytest.raises(ValueError, match="outside 0..31.*-1"):
        vq.decode(torch.tensor([[0, -1]]))
    with pytest.raises(ValueError, match="N=0"):
        vq.decode(torch.zeros(1, 0, dtype=torch.long))
    with pytest.raises(ValueError, match="integer ids"):
        vq.decode(torch.zeros(1, 3))


def test_checkpoint_roundtrip_and_load_errors(tmp_path: Path):
    vq = _random_vq()
    path = tmp_path / "net.pth"
    vq.save_checkpoint(path)
    assert set(torch.load(path, weights_only=True)) == {"net"}
    loaded = MotionVQVAE.from_checkpoint(path, nfeats=263)  # config inferred from the shapes
    assert loaded.config == TINY and not loaded.training
    for k, v in vq.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    # Pitfall 11: loading marks the EMA state as initialised from the loaded codebook, so a
    # train-mode forward continues from it instead of re-initialising it from the batch.
    q = loaded.quantizer
    assert q.init and torch.equal(q.code_sum, q.codebook) and bool((q.code_count == 1).all())

    with pytest.raises(CheckpointError, match="nfeats=263.*\\[16, 263, 3\\].*nfeats=251"):
        MotionVQVAE.from_checkpoint(path, nfeats=251)
    net = torch.load(path, weights_only=True)["net"]
    del net["vqvae.decoder.model.4.bias"]
    net["vqvae.extra.weight"] = torch.zeros(1)
    torch.save({"net": net}, tmp_path / "bad.pth")
    with pytest.raises(
        CheckpointError, match=r"missing keys \(1\).*decoder.model.4.bias.*unexpected keys.*extra"
    ):
        MotionVQVAE.from_checkpoint(tmp_path / "bad.pth", nfeats=263)
    with pytest.raises(CheckpointError, match="shape mismatches.*codebook"):
        MotionVQVAE.from_checkpoint(
            path, nfeats=263, config=VQVAEConfig(nb_code=64, code_dim=16, output_emb_width=16, width=16)
        )
    data = path.read_bytes()
    (tmp_path / "trunc.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="trunc.pth.*truncated"):
        MotionVQVAE.from_checkpoint(tmp_path / "trunc.pth")
    torch.save({"model": net}, tmp_path / "nokey.pth")
    with pytest.raises(CheckpointError, match="key 'net'.*model"):
        MotionVQVAE.from_checkpoint(tmp_path / "nokey.pth")
    with pytest.raises(CheckpointError, match="not found"):
        MotionVQVAE.from_checkpoint(tmp_path / "missing.pth")


def test_quantizer_ema_update_and_dead_code_reset():
    torch.manual_seed(0)
    q = MotionVQVAE(
        4, VQVAEConfig(nb_code=4, code_dim=2, output_emb_width=2, width=4, depth=1, mu=0.5)
    ).quantizer
    q.train()
    x = torch.tensor([[[0.0, 0.0, 10.0, 10.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0, 10.0, 10.0]]])  # (1, 2, 6)
    q(x)  # init from tiled batch (6 vectors >= 4 codes: first 4 rows, no noise), then one EMA step
    assert q.init
    # codes after init: rows [0,0],[0,0],[10,10],[10,10]; vectors go to the first of equal codes.
    # counts = [2, 0, 4, 0] -> code_count = 0.5*1 + 0.5*count = [1.5, 0.5, 2.5, 0.5]
    torch.testing.assert_close(q.code_count, torch.tensor([1.5, 0.5, 2.5, 0.5]))
    # used codes: code_sum/code_count; dead codes (count < 1) reset to the first batch rows
    torch.testing.assert_close(q.codebook, torch.tensor([[0.0, 0.0], [0.0, 0.0], [10.0, 10.0], [10.0, 10.0]]))
    q.eval()
    codes = q.quantize(torch.tensor([[9.0, 9.0], [0.1, 0.0]]))
    assert codes.tolist() == [2, 0]


def test_lr_schedule_matches_reference_loop():
    cfg = load_config(VQTrainConfig, None, ["warmup_iters=1000", "total_iters=300000", "lr=2.0e-4"])
    assert cfg.total_steps == 999 + 300000
    assert lr_at(1, cfg) == pytest.approx(2e-4 * 2 / 1001)
    assert lr_at(999, cfg) == pytest.approx(2e-4 * 1000 / 1001)
    assert lr_at(1000, cfg) == pytest.approx(2e-4)  # main iteration 1
    assert lr_at(999 + 200000, cfg) == pytest.approx(2e-4)  # scheduler stepped 199999 times
    assert lr_at(999 + 200001, cfg) == pytest.approx(2e-4 * 0.05)


def _train_cfg(root: Path, out: Path, *extra: str) -> VQTrainConfig:
    overrides = [
        f"dataset_root={root}", f"output_dir={out}", "model.width=16", "model.code_dim=16",
        "model.output_emb_width=16", "model.nb_code=32", "model.depth=2", "batch_size=4", "window_size=16",
        "warmup_iters=3", "total_iters=5", "lr=3.0e-3", "lr_milestones=[4]", "val_every=100", "log_every=2",
        "progress=false", "seed=5", *extra,
    ]  # fmt: skip
    return load_config(VQTrainConfig, CONFIGS / "tiny" / "vq.yaml", overrides)


def _trainer(cfg: VQTrainConfig) -> VQTrainer:
    set_seed(cfg.seed)
    norm = FeatureNorm.resolve(HML, dataset_root=cfg.dataset_root)
    train = load_clips(cfg.dataset_root, "train", HML, norm, min_len=cfg.window_size, progress=False)
    val = load_clips(cfg.dataset_root, "val", HML, norm, min_len=4, progress=False)
    return VQTrainer(cfg, HML, MotionWindows(train, cfg.window_size, cfg.batch_size, cfg.seed), val, norm)


def test_training_lowers_loss_and_resume_is_exact(tiny_dataset: Path, tmp_path: Path):
    full = _trainer(_train_cfg(tiny_dataset, tmp_path / "full", "total_iters=12"))
    losses = full.fit()
    assert len(losses) == 14
    assert np.mean(losses[-3:]) < np.mean(losses[:3])

    # Interrupted after 5 steps, resumed in a fresh trainer: identical losses and weights.
    part = _trainer(_train_cfg(tiny_dataset, tmp_path / "part", "total_iters=12", "max_steps=5"))
    first = part.fit()
    resumed = _trainer(_train_cfg(tiny_dataset, tmp_path / "part", "total_iters=12"))
    second = resumed.fit()
    assert first + second == losses
    for k, v in full.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k
    assert torch.equal(full.model.quantizer.code_count, resumed.model.quantizer.code_count)

    # The trainer's checkpoint is in the released layout and loads back bit-identical.
    run = tmp_path / "full"
    assert {p.name for p in run.iterdir()} >= {
        "net_last.pth",
        "net_best_mpjpe.pth",
        "resume_last.pt",
        "metrics.jsonl",
    }
    assert set(torch.load(run / "net_last.pth", weights_only=True)) == {"net"}
    loaded = MotionVQVAE.from_checkpoint(run / "net_last.pth", nfeats=263)
    for k, v in full.model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    # The resume file also satisfies the released loader (extra keys are ignored, 'net' is strict).
    MotionVQVAE.from_checkpoint(run / "resume_last.pt", nfeats=263)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in rows if r["split"] == "val"]
    assert val and val[-1]["mpjpe_mm"] > 0 and 1 <= val[-1]["perplexity"] <= 32

    # Resuming under a different architecture is refused, naming the field.
    with pytest.raises(CheckpointError, match="model"):
        _trainer(_train_cfg(tiny_dataset, tmp_path / "part", "model.depth=1")).fit()


def test_train_and_tokenize_scripts(make_tiny_dataset, tmp_path: Path):
    from prepare import tokenize_motions, train_vq

    root = make_tiny_dataset()
    run = tmp_path / "run"
    args = ["--config", str(CONFIGS / "tiny" / "vq.yaml"), f"dataset_root={root}", f"output_dir={run}",
            "model.width=16", "model.code_dim=16", "model.output_emb_width=16", "model.nb_code=32", "model.depth=1",
            "batch_size=4", "window_size=16", "warmup_iters=2", "total_iters=3", "progress=false", "num_threads=0"]  # fmt: skip
    result = train_vq.main(args)
    assert result["split"] == "test" and result["n_clips"] == 8 and result["mpjpe_mm"] > 0
    assert {p.name for p in run.iterdir()} >= {
        "config.yaml", "run_info.json", "meta", "metrics.jsonl", "net_last.pth", "resume_last.pt", "eval_test.json",
    }  # fmt: skip
    np.testing.assert_array_equal(np.load(run / "meta" / "mean.npy"), np.load(root / "Mean.npy"))
    mtime = (run / "net_last.pth").stat().st_mtime_ns
    assert train_vq.main(args) == result  # finished run: nothing retrained, result kept
    assert (run / "net_last.pth").stat().st_mtime_ns == mtime

    from eval import vq_reconstruct

    rec = vq_reconstruct.main([f"vq_checkpoint={run / 'net_last.pth'}", f"dataset_root={root}", "ids=['000001']",
                               f"output_dir={tmp_path / 'rec'}"])  # fmt: skip
    assert rec["clips"]["000001"]["n_frames"] == 120
    assert np.load(tmp_path / "rec" / "000001_recon.npy").shape == (120, 263)
    np.testing.assert_array_equal(
        np.load(tmp_path / "rec" / "000001_gt.npy"), np.load(root / "new_joint_vecs" / "000001.npy")
    )

    # A clip shorter than one code and an unreadable clip.
    np.save(root / "new_joint_vecs" / "000002.npy", np.zeros((3, 263), np.float32))
    bad = np.zeros((50, 263), np.float32)
    bad[10] = np.nan
    np.save(root / "new_joint_vecs" / "000006.npy", bad)
    codes_dir = tmp_path / "codes"
    tok = ["--config", str(CONFIGS / "tiny" / "tokenize.yaml"), f"dataset_root={root}",
           f"vq_checkpoint={run / 'net_last.pth'}", f"output_dir={codes_dir}", "progress=false", "num_threads=0"]  # fmt: skip
    with pytest.raises(DatasetFileError, match="000006.npy.*NaN"):
        tokenize_motions.main(tok)
    index = tokenize_motions.main([*tok, "on_error=skip", "max_skip_fraction=0.2"])
    assert index["skipped"][0]["id"] == "000006" and index["empty"] == ["000002"]
    assert len(index["entries"]) == 7
    vq = MotionVQVAE.from_checkpoint(run / "net_last.pth")
    mean, std = np.load(run / "meta" / "mean.npy"), np.load(run / "meta" / "std.npy")
    for motion_id, frames in (("000000", 60), ("000001", 120), ("000004", 199)):
        codes = read_code_file(codes_dir / f"{motion_id}.npy", nb_code=32)
        offsets = list(range(frames - (frames // 4) * 4 + 1))
        assert codes.shape == (len(offsets), frames // 4)
        x = (np.load(root / "new_joint_vecs" / f"{motion_id}.npy") - mean) / std
        m = (frames // 4) * 4
        for k in offsets:
            expect = vq.encode(torch.from_numpy(x[None, k : k + m]).float())[0].numpy()
            np.testing.assert_array_equal(codes[k], expect)
    assert read_code_file(codes_dir / "000002.npy", nb_code=32).shape == (1, 0)
    np.save(tmp_path / "bad_codes.npy", np.array([[1, 2, 3], [4, 40, 5]]))
    with pytest.raises(
        DatasetFileError, match="bad_codes.npy: 1 code.*outside 0..31, first at row 1, position 1: 40"
    ):
        read_code_file(tmp_path / "bad_codes.npy", nb_code=32)
    # Same checkpoint: kept; different crops setting: refused (the run folder names the key and the fix).
    again = tokenize_motions.main([*tok, "on_error=skip", "max_skip_fraction=0.2"])
    assert again["entries"] == index["entries"]
    with pytest.raises(RunFolderError, match='crops was "all" and is "first" now.*force=true'):
        tokenize_motions.main([*tok, "crops=first"])


def test_window_batches_are_a_function_of_seed_and_step(tiny_dataset: Path):
    norm = FeatureNorm.resolve(HML, dataset_root=tiny_dataset)
    clips = load_clips(tiny_dataset, "train", HML, norm, min_len=16, progress=False,
                       tracker=SkipTracker("t"))  # fmt: skip
    a, b = MotionWindows(clips, 16, 2, seed=3), MotionWindows(clips, 16, 2, seed=3)
    assert torch.equal(a.batch(7), b.batch(7)) and not torch.equal(a.batch(7), a.batch(8))
    idx = np.concatenate([a.batch_plan(s)[0] for s in range(a.batches_per_epoch)])
    assert sorted(idx.tolist()) == list(range(len(clips)))  # one epoch visits each clip once
    with pytest.raises(ValueError, match="fewer than batch_size"):
        MotionWindows(clips, 16, 99, seed=0)


def test_configs_load():
    for name in ("humanml3d", "kit", "tiny"):
        cfg = load_config(VQTrainConfig, CONFIGS / name / "vq.yaml")
        assert cfg.model.nb_code == 512
        load_config(TokenizeConfig, CONFIGS / name / "tokenize.yaml")
    hml = load_config(VQTrainConfig, CONFIGS / "humanml3d" / "vq.yaml")
    assert hml.model == VQVAEConfig() and hml.batch_size == 256 and hml.total_steps == 999 + 300000


class _ShiftVQ(torch.nn.Module):
    """Stub tokenizer whose 'reconstruction' is the input with every RIC joint raised by 5 cm."""

    frames_per_code, nb_code = 4, 8

    def encode(self, x, lengths):
        codes = torch.zeros(x.shape[0], x.shape[1] // 4, dtype=torch.long)
        codes[:, 0] = 1
        return codes.masked_fill(torch.arange(codes.shape[1])[None] >= (lengths // 4)[:, None], PAD_CODE)

    def decode(self, codes, n):
        self.last = self.inputs.clone()
        self.last[..., 5:67:3] += 0.05 / self.std[5:67:3]  # Y of joints 1..21 in normalised units
        return self.last


def test_reconstruction_mpjpe_by_hand():
    from data.vq_data import Clip
    from models.vq_training import evaluate_reconstruction

    rng = np.random.default_rng(0)
    mean, std = np.zeros(263, np.float32), np.full(263, 0.5, np.float32)
    clips = [Clip("a", rng.standard_normal((40, 263)).astype(np.float32))]
    vq = _ShiftVQ()
    vq.std = torch.from_numpy(std)
    vq.inputs = torch.from_numpy(clips[0].motion)[None]
    res = evaluate_reconstruction(vq, clips, spec=HML, norm=FeatureNorm(mean, std))
    # 21 of 22 joints are off by 50 mm, the root by 0: mean 50 * 21 / 22 mm, aligned and global.
    assert res["mpjpe_mm"] == pytest.approx(50 * 21 / 22, rel=1e-4)
    assert res["mpjpe_global_mm"] == pytest.approx(50 * 21 / 22, rel=1e-4)
    assert res["codes_used"] == 2 and res["n_frames"] == 40
    assert res["perplexity"] == pytest.approx(np.exp(-(0.1 * np.log(0.1 + 1e-7) + 0.9 * np.log(0.9 + 1e-7))))
