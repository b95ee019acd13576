"""Stick-figure rendering: GIF frame counts, side by side, CLI on the tiny dataset."""

from __future__ import annotations

from pathlib import Path

import imageio.v2 as iio_v2
import numpy as np
import pytest
from PIL import Image

import eval.render as render_module
from data.motion_fixtures import rest_pose
from data.specs import get_dataset_spec
from eval.render import chain_colors, main, mp4_available, render_frame, render_motions, to_joints

SPEC = get_dataset_spec("humanml3d")


def _standing(n_frames: int, step: float = 0.02) -> np.ndarray:
    """(T, 22, 3) rest pose from the spec's offsets, walking along +Z."""
    joints = np.repeat(rest_pose(SPEC.target_offsets, SPEC)[None], n_frames, axis=0)
    joints[:, :, 2] += step * np.arange(n_frames)[:, None]
    return joints.astype(np.float32)


def _gif_info(path: Path) -> tuple[int, tuple[int, int], int]:
    with Image.open(path) as im:
        return im.n_frames, im.size, im.info["duration"]


def test_single_gif_frame_count(tmp_path: Path):
    out = render_motions([_standing(12)], tmp_path / "a.gif", spec=SPEC, titles=["a person walks"], mp4="no")
    assert out == [tmp_path / "a.gif"]
    n, _, duration = _gif_info(out[0])
    assert n == 12 and duration == 50  # 20 fps
    static = np.repeat(_standing(1), 5, axis=0)  # identical poses still give one GIF frame each
    assert _gif_info(render_motions([static], tmp_path / "s.gif", mp4="no", fps=10)[0])[0] == 5


def test_side_by_side_holds_last_frame(tmp_path: Path):
    single = _gif_info(render_motions([_standing(6)], tmp_path / "one.gif", mp4="no")[0])
    out = render_motions([_standing(14), _standing(6), _standing(9)], tmp_path / "cmp.gif",
                         titles=["round 0", "round 1", "round 2"], mp4="no", still_frame=13)  # fmt: skip
    n, size, _ = _gif_info(out[0])
    assert n == 14 and size[0] == 3 * single[1][0]
    assert out[1] == tmp_path / "cmp.frame13.png" and out[1].is_file()
    with pytest.raises(ValueError, match="2 titles for 3 motions"):
        render_motions([_standing(3)] * 3, tmp_path / "x.gif", titles=["a", "b"], mp4="no")


def test_frame_shows_the_figure(tmp_path: Path):
    png = render_frame([_standing(4)], tmp_path / "f.png", 2, spec=SPEC, dpi=60)
    img = np.asarray(Image.open(png).convert("RGB")).astype(int)
    red = (img[..., 0] > 180) & (img[..., 1] < 90) & (img[..., 2] < 90)
    blue = (img[..., 2] > 150) & (img[..., 0] < 80)
    assert red.sum() > 20 and blue.sum() > 20  # both body sides are drawn
    # Facing the camera, the right side (red) appears left of the left side (blue).
    assert np.nonzero(red)[1].mean() < np.nonzero(blue)[1].mean()


def test_kit_skeleton(tmp_path: Path):
    kit = get_dataset_spec("kit")
    joints = np.random.default_rng(0).uniform(-300, 300, (5, kit.joints_num, 3)).astype(np.float32)
    assert _gif_info(render_motions([joints], tmp_path / "k.gif", spec=kit, mp4="no")[0])[:1] == (5,)


def test_inputs_and_colours():
    assert chain_colors(SPEC) == ["#d62728", "#1f77b4", "#303030", "#d62728", "#1f77b4"]
    assert len(chain_colors(get_dataset_spec("kit"))) == 5
    with pytest.raises(ValueError, match=r"neither joints \(T, 22, 3\) nor features \(T, 263\)"):
        to_joints(np.zeros((5, 21, 3)), SPEC)


def test_gif_palette_and_still_frame(tmp_path: Path):
    out = render_motions([_standing(5)], tmp_path / "p.gif", mp4="no", still_frame=99)
    assert out == [tmp_path / "p.gif", tmp_path / "p.frame4.png"]  # clamped to the last frame
    with Image.open(out[0]) as im:
        assert im.mode == "P" and len(im.getpalette()) // 3 <= 64
        assert im.info["loop"] == 0
    still = np.asarray(Image.open(out[1]).convert("RGB"))
    assert still.shape[2] == 3 and (still < 128).any() and (still > 200).any()  # figure on white


def test_features_are_decoded(tmp_path: Path):
    feats = np.zeros((8, SPEC.feat_dim), np.float32)
    feats[:, 3] = 0.9  # root height; zero RIC puts every other joint at the origin
    joints = to_joints(feats, SPEC)
    assert joints.shape == (8, 22, 3)
    np.testing.assert_allclose(joints[:, 0], np.tile([0.0, 0.9, 0.0], (8, 1)), atol=1e-7)
    np.testing.assert_allclose(joints[:, 1:], 0.0, atol=1e-7)
    assert _gif_info(render_motions([feats], tmp_path / "f.gif", mp4="no")[0])[0] == 8


def test_mp4_needs_imageio_ffmpeg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(render_module, "mp4_available", lambda: False)
    with pytest.raises(RuntimeError, match="install the imageio-ffmpeg package"):
        render_motions([_standing(3)], tmp_path / "y.gif", mp4="yes")
    assert not (tmp_path / "y.gif").exists()
    # auto: the GIF alone.
    assert render_motions([_standing(3)], tmp_path / "a.gif", mp4="auto") == [tmp_path / "a.gif"]
    assert not (tmp_path / "a.mp4").exists()


@pytest.mark.skipif(not mp4_available(), reason="imageio-ffmpeg not installed")
def test_mp4_written(tmp_path: Path):
    out = render_motions([_standing(6)], tmp_path / "m.gif", mp4="yes", fps=10, still_frame=2)
    assert out == [tmp_path / "m.gif", tmp_path / "m.mp4", tmp_path / "m.frame2.png"]
    with iio_v2.get_reader(out[1], format="FFMPEG") as reader:
        assert reader.count_frames() == 6
        meta = reader.get_meta_data()
        frame = reader.get_data(0)
    assert meta["fps"] == 10 and meta["codec"] == "h264"
    width, height = _gif_info(out[0])[1]
    # Even size for yuv420p: the odd GIF size is padded by at most one pixel.
    assert frame.shape[:2] == (height + height % 2, width + width % 2)
    assert frame.shape[0] % 2 == 0 and frame.shape[1] % 2 == 0


def test_cli_dataset_and_npy(tiny_dataset: Path, tmp_path: Path):
    written = main(
        ["--dataset-root", str(tiny_dataset), "--ids", "000006", "--out", str(tmp_path), "--mp4", "no"]
    )
    assert written == [tmp_path / "000006.gif"] and _gif_info(written[0])[0] == 41
    a, b = tmp_path / "a.npy", tmp_path / "b.npy"
    np.save(a, _standing(7))
    np.save(b, _standing(4))
    out = main(
        ["--npy", str(a), str(b), "--titles", "A", "B", "--out", str(tmp_path / "ab.gif"), "--mp4", "no"]
    )
    assert out == [tmp_path / "ab.gif"] and _gif_info(out[0])[0] == 7
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path)])
