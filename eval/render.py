"""Stick-figure animations of motions (GIF, and MP4 when imageio can write one).

Joints ``(T, J, 3)`` (Y up) or features ``(T, D)`` (decoded with
``data.motion_repr.recover_from_ric``) are drawn as the dataset's kinematic chains (right side
red, left side blue, spine dark), over a floor grid, with the root's past trajectory on the floor.
The camera follows the root, so the floor grid and the trajectory show the displacement. Several
motions render side by side with titles; shorter ones hold their last frame.

Files are written through ``imageio``: GIFs with its Pillow plugin (each frame quantised to 64
colours as it is added, so long side-by-side renders stay small in memory), MP4s (H.264) with its
FFMPEG plugin, which needs the ``imageio-ffmpeg`` package (it ships an ffmpeg binary;
``IMAGEIO_FFMPEG_EXE`` selects another one).

Files are written atomically (a temporary file beside the target, then a rename), so an
interrupted render leaves the earlier file or none, never half a GIF. Rendering owns no folder: it
may write into another run's folder (e.g. ``eval.vq_reconstruct``'s), replaces only the files it
names and deletes nothing.

Speed: the figure and its artists are built once and updated with ``set_data_3d`` /
``set_segments`` per frame at low dpi, with the axes hidden; a 196-frame single-panel GIF takes a
few seconds on one core.

CLI::

    # first 4 motions of a split, one GIF each, titled with their first caption
    python -m eval.render --dataset-root dataset/HumanML3D --split test --num 4 --out runs/render
    # arbitrary joints / feature files side by side in one GIF
    python -m eval.render --npy a.npy b.npy --titles "round 0" "round 1" --out runs/render/cmp.gif
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import textwrap
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path

import imageio.v2 as iio_v2
import imageio.v3 as iio
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from mpl_toolkits.mplot3d import Axes3D  # noqa: F401  (registers the "3d" projection)
from mpl_toolkits.mplot3d.art3d import Line3DCollection

from data.layout import DatasetPaths, load_features, load_joints, load_npy, read_captions, read_split
from data.motion_repr import recover_from_ric
from data.run_folder import TEMP_SUFFIX
from data.specs import DATASET_NAMES, DatasetSpec, get_dataset_spec

logger = logging.getLogger(__name__)

RIGHT_COLOR = "#d62728"
LEFT_COLOR = "#1f77b4"
CENTRE_COLOR = "#303030"
_GRID_LINES = 9
"""Floor grid lines per direction inside the view box."""
_TITLE_WIDTH = 48
"""Title characters per line (9 pt on a 4-inch panel)."""
_TITLE_LINE_INCHES = 0.18
_PANEL_INCHES = 4.0
_DPI = 100
"""4-inch panels at 100 dpi: 400 px per motion, large enough to read the pose in a GIF."""
_VIEW_ZOOM = 1.9
_VIEW_RAISE = 0.1
"""The 3D axes leave wide empty margins around the view box, most of it above the head: zoom in and
raise each panel's axes by this share of its height, so the body fills the frame while the floor
grid around the feet stays visible (its far corners are cut)."""
_GIF_PALETTE_BITS = 6
"""GIF frames are quantised to 2**6 = 64 colours (flat-coloured lines on white need no more)."""


def chain_colors(spec: DatasetSpec) -> list[str]:
    """Colour per kinematic chain: right side red, left side blue, others dark.

    Sides come from the spec's ``face_joint_indx`` (r_hip, l_hip, r_shoulder, l_shoulder).
    """
    r_hip, l_hip, r_sh, l_sh = spec.face_joint_indx
    out = []
    for chain in spec.kinematic_chain:
        if r_hip in chain or r_sh in chain:
            out.append(RIGHT_COLOR)
        elif l_hip in chain or l_sh in chain:
            out.append(LEFT_COLOR)
        else:
            out.append(CENTRE_COLOR)
    return out


def to_joints(motion: np.ndarray, spec: DatasetSpec | str) -> np.ndarray:
    """Joints ``(T, J, 3)`` from joints or raw (un-normalised) features ``(T, D)``."""
    spec = get_dataset_spec(spec)
    motion = np.asarray(motion, dtype=np.float32)
    if motion.ndim == 3 and motion.shape[1:] == (spec.joints_num, 3):
        joints = motion
    elif motion.ndim == 2 and motion.shape[1] == spec.feat_dim:
        joints = np.asarray(recover_from_ric(motion, spec.joints_num), dtype=np.float32)
    else:
        raise ValueError(
            f"motion of shape {motion.shape} is neither joints (T, {spec.joints_num}, 3) nor features "
            f"(T, {spec.feat_dim}) of dataset {spec.name!r}"
        )
    if len(joints) == 0:
        raise ValueError("cannot render a motion with 0 frames")
    if not np.isfinite(joints).all():
        raise ValueError("motion contains NaN or inf")
    return joints


def _to_plot(points: np.ndarray) -> np.ndarray:
    """Data (x, y_up, z) -> matplotlib (x, -z, y): Z up, and a rotation, so left/right stay put."""
    return np.stack([points[..., 0], -points[..., 2], points[..., 1]], axis=-1)


class _Panel:
    """Artists of one motion; ``update(t)`` moves them to frame ``t`` (clamped to the last frame)."""

    def __init__(self, ax, joints: np.ndarray, spec: DatasetSpec, title: str | None, height: float):
        self.spec = spec
        self.radius = spec.plot_radius
        joints = joints.copy()
        joints[..., 1] -= joints[..., 1].min()  # stand on the floor
        self.joints = joints
        self.root_xz = joints[:, 0, [0, 2]]
        h = self.radius / 2
        self.floor_half = 0.8 * h
        """Half-width of the drawn floor, inside the view box so it stays within the panel."""
        self.ax = ax
        ax.set_xlim(-h, h)
        ax.set_ylim(-h, h)
        ax.set_zlim(0, height)
        # Equal units on all axes; the 3D axes leave wide margins, so zoom in.
        ax.set_box_aspect((1, 1, height / self.radius), zoom=_VIEW_ZOOM)
        ax.view_init(elev=15, azim=-60)
        ax.set_axis_off()
        box = ax.get_position()
        ax.set_position([box.x0, box.y0 + _VIEW_RAISE * box.height, box.width, box.height])
        if title:  # a figure text, not the axes title, which the raised axes would push off the top
            ax.figure.text((box.x0 + box.x1) / 2, 1.0, title, fontsize=9, ha="center", va="top")
        self.grid = Line3DCollection(self._grid_segments(self.root_xz[0]), colors="#b0b0b0", linewidths=0.6)
        ax.add_collection3d(self.grid, autolim=False)
        (self.traj,) = ax.plot([], [], [], color="#2ca02c", linewidth=1.2)
        self.lines = []
        for chain, color in zip(spec.kinematic_chain, chain_colors(spec), strict=True):
            width = 2.5 if len(chain) > 5 else 2.0
            (line,) = ax.plot([], [], [], color=color, linewidth=width, solid_capstyle="round")
            self.lines.append((np.asarray(chain), line))

    def _grid_segments(self, root_xz: np.ndarray) -> np.ndarray:
        """Floor grid lines at fixed world positions, shifted into the root-centred view."""
        h = self.floor_half
        step = 2 * h / (_GRID_LINES - 1)
        segs = []
        for axis in (0, 1):
            first = np.ceil((root_xz[axis] - h) / step) * step
            for k in range(_GRID_LINES):
                c = first + k * step - root_xz[axis]
                if c > h:
                    break
                a = np.array([c, 0.0, -h]) if axis == 0 else np.array([-h, 0.0, c])
                b = np.array([c, 0.0, h]) if axis == 0 else np.array([h, 0.0, c])
                segs.append([a, b])
        return _to_plot(np.asarray(segs))

    def update(self, t: int) -> None:
        t = min(t, len(self.joints) - 1)
        root = self.root_xz[t]
        frame = self.joints[t].copy()
        frame[:, [0, 2]] -= root
        pts = _to_plot(frame)
        for chain, line in self.lines:
            p = pts[chain]
            line.set_data_3d(p[:, 0], p[:, 1], p[:, 2])
        self.grid.set_segments(self._grid_segments(root))
        past = self.root_xz[: t + 1] - root
        outside = np.abs(past).max(axis=1) > self.floor_half
        past = np.where(outside[:, None], np.nan, past)
        traj = _to_plot(np.stack([past[:, 0], np.zeros(len(past)), past[:, 1]], axis=-1))
        self.traj.set_data_3d(traj[:, 0], traj[:, 1], traj[:, 2])


class MotionFigure:
    """One figure with a panel per motion; ``frame(t)`` returns the ``(H, W, 3)`` uint8 image."""

    def __init__(
        self,
        motions: Sequence[np.ndarray],
        spec: DatasetSpec | str,
        titles: Sequence[str] | None = None,
        *,
        panel_inches: float = _PANEL_INCHES,
        dpi: int = _DPI,
    ):
        spec = get_dataset_spec(spec)
        if not motions:
            raise ValueError("no motions to render")
        titles = list(titles) if titles is not None else [None] * len(motions)
        if len(titles) != len(motions):
            raise ValueError(f"{len(titles)} titles for {len(motions)} motions")
        joints = [to_joints(m, spec) for m in motions]
        self.n_frames = max(len(j) for j in joints)
        # View height: half the box width, or more when a body is taller (KIT's radius is tighter).
        tallest = max(float(np.ptp(j[..., 1])) for j in joints)
        view_height = max(0.5 * spec.plot_radius, 1.1 * tallest)
        n = len(joints)
        wrapped = [textwrap.fill(t, _TITLE_WIDTH) if t else "" for t in titles]
        title_inches = max(w.count("\n") + 1 if w else 0 for w in wrapped) * _TITLE_LINE_INCHES
        height = panel_inches + title_inches
        # A bare Figure on an Agg canvas: no pyplot state, nothing to close, any backend.
        self.fig = Figure(figsize=(panel_inches * n, height), dpi=dpi)
        FigureCanvasAgg(self.fig)
        self.fig.subplots_adjust(left=0, right=1, bottom=0, top=panel_inches / height, wspace=0)
        self.panels = [
            _Panel(self.fig.add_subplot(1, n, k + 1, projection="3d"), j, spec, t, view_height)
            for k, (j, t) in enumerate(zip(joints, wrapped, strict=True))
        ]
        # A frame counter keeps consecutive frames distinct, so GIF writers cannot merge them.
        self.counter = self.fig.text(0.01, 0.01, "", fontsize=7, color="#606060")

    def frame(self, t: int) -> np.ndarray:
        for panel in self.panels:
            panel.update(t)
        self.counter.set_text(f"{t + 1}/{self.n_frames}")
        self.fig.canvas.draw()
        return np.asarray(self.fig.canvas.buffer_rgba())[..., :3].copy()


def mp4_available() -> bool:
    """Whether imageio can write MP4 here (``imageio-ffmpeg`` installed and its ffmpeg found)."""
    try:
        import imageio_ffmpeg
    except ImportError:
        return False
    try:
        imageio_ffmpeg.get_ffmpeg_exe()
    except RuntimeError:
        return False
    return True


def _even(rgb: np.ndarray) -> np.ndarray:
    """Pad ``(H, W, 3)`` with white to even H and W (H.264 in yuv420p needs even sizes)."""
    pad_h, pad_w = rgb.shape[0] % 2, rgb.shape[1] % 2
    if not (pad_h or pad_w):
        return rgb
    return np.pad(rgb, ((0, pad_h), (0, pad_w), (0, 0)), constant_values=255)


@contextmanager
def _replacing(target: Path, suffix: str = "") -> Iterator[Path]:
    """A temporary path beside ``target``, synced and renamed onto it when the block succeeds.

    On an exception the temporary file is removed and ``target`` keeps its earlier content.
    ``suffix`` ends the temporary name, for writers that pick the format from it (ffmpeg).
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}{suffix}"
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def render_motions(
    motions: Sequence[np.ndarray],
    out: str | Path,
    *,
    spec: DatasetSpec | str = "humanml3d",
    titles: Sequence[str] | None = None,
    fps: float | None = None,
    mp4: str = "auto",
    still_frame: int | None = None,
    dpi: int = _DPI,
) -> list[Path]:
    """Render motions side by side into ``out`` (a ``.gif`` path).

    Args:
        motions: each joints ``(T_k, J, 3)`` or raw features ``(T_k, D)``; the animation has
            ``max_k T_k`` frames and shorter motions hold their last frame.
        out: GIF path; the MP4 goes next to it with suffix ``.mp4``.
        spec: dataset spec or name (skeleton, view radius ``plot_radius``, default fps).
        titles: one title per motion (wrapped).
        fps: playback rate (default ``spec.fps``).
        mp4: ``"auto"`` writes an MP4 too when imageio can (:func:`mp4_available`), ``"yes"``
            requires it, ``"no"`` skips it.
        still_frame: also save frame ``still_frame`` as ``<out>.frame<k>.png``.
        dpi: resolution (100 gives 400 px per 4-inch panel).

    Returns:
        Paths written (GIF first).
    """
    spec = get_dataset_spec(spec)
    fps = float(fps or spec.fps)
    out = Path(out)
    if out.suffix.lower() != ".gif":
        raise ValueError(f"output must be a .gif path, got {out}")
    if mp4 not in ("auto", "yes", "no"):
        raise ValueError(f"mp4 must be auto, yes or no, got {mp4!r}")
    write_mp4 = mp4 == "yes" or (mp4 == "auto" and mp4_available())
    if mp4 == "yes" and not mp4_available():
        raise RuntimeError(
            "mp4='yes' but imageio cannot write MP4: install the imageio-ffmpeg package "
            "(pip install imageio-ffmpeg) or use mp4='auto'"
        )
    fig = MotionFigure(motions, spec, titles, dpi=dpi)
    written = [out]
    mp4_path = out.with_suffix(".mp4")
    gif_args = {"duration": round(1000 / fps), "loop": 0, "disposal": 1, "bits": _GIF_PALETTE_BITS}
    with ExitStack() as stack:
        gif_tmp = stack.enter_context(_replacing(out))
        gif = stack.enter_context(iio.imopen(gif_tmp, "w", plugin="pillow", extension=".gif"))
        video = None
        if write_mp4:
            mp4_tmp = stack.enter_context(_replacing(mp4_path, suffix=".mp4"))
            video = iio_v2.get_writer(mp4_tmp, format="FFMPEG", mode="I", fps=fps, codec="libx264",
                                      pixelformat="yuv420p", macro_block_size=2, ffmpeg_log_level="error")  # fmt: skip
            stack.callback(video.close)
        for t in range(fig.n_frames):
            rgb = fig.frame(t)
            gif.write(rgb, is_batch=False, **gif_args)
            if video is not None:
                video.append_data(_even(rgb))
            if still_frame is not None and t == min(still_frame, fig.n_frames - 1):
                png = out.with_suffix(f".frame{t}.png")
                with _replacing(png) as png_tmp:
                    iio.imwrite(png_tmp, rgb, extension=".png")
                written.append(png)
    if video is not None:
        written.insert(1, mp4_path)
    logger.info("wrote %s (%d frames, %.1f fps)", ", ".join(map(str, written)), fig.n_frames, fps)
    return written


def render_frame(
    motions: Sequence[np.ndarray],
    out: str | Path,
    frame: int,
    *,
    spec: DatasetSpec | str = "humanml3d",
    titles: Sequence[str] | None = None,
    dpi: int = 100,
) -> Path:
    """Save a single frame of the side-by-side figure as a PNG (atomically)."""
    fig = MotionFigure(motions, spec, titles, dpi=dpi)
    with _replacing(Path(out)) as tmp:
        iio.imwrite(tmp, fig.frame(frame), extension=".png")
    return Path(out)


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------


def load_dataset_motion(paths: DatasetPaths, motion_id: str, spec: DatasetSpec, source: str) -> np.ndarray:
    """Joints ``(T, J, 3)`` or features ``(T, D)`` of a dataset motion (``source``: auto, joints, vecs)."""
    joints_file = paths.joint_file(motion_id)
    if source == "joints" or (source == "auto" and joints_file.is_file()):
        return load_joints(joints_file, spec)
    return load_features(paths.vec_file(motion_id), spec)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m eval.render", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="output folder (dataset mode) or .gif path / folder (--npy)")
    p.add_argument("--dataset", default="humanml3d", help=f"dataset spec ({', '.join(DATASET_NAMES)})")
    p.add_argument("--dataset-root", type=Path, help="folder in the HumanML3D layout")
    p.add_argument("--split", default="test", help="split whose first motions are rendered")
    p.add_argument("--num", type=int, default=4, help="how many motions of the split")
    p.add_argument("--ids", nargs="+", help="render these ids instead of the split's first --num")
    p.add_argument("--source", choices=("auto", "joints", "vecs"), default="auto",
                   help="new_joints (auto: when present) or new_joint_vecs decoded with recover_from_ric")  # fmt: skip
    p.add_argument("--npy", nargs="+", type=Path, help="joints (T,J,3) or features (T,D) files, side by side")
    p.add_argument("--titles", nargs="+", help="titles for --npy files (default: file names)")
    p.add_argument("--fps", type=float, help="playback fps (default: the dataset's)")
    p.add_argument(
        "--mp4", choices=("auto", "yes", "no"), default="auto", help="also write MP4 (needs imageio-ffmpeg)"
    )
    p.add_argument("--still", type=int, help="also save this frame as a PNG")
    return p


def main(argv: list[str] | None = None) -> list[Path]:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    spec = get_dataset_spec(args.dataset)
    common = {"spec": spec, "fps": args.fps, "mp4": args.mp4, "still_frame": args.still}
    out = Path(args.out)
    written: list[Path] = []
    if args.npy:
        if args.dataset_root is not None:
            raise SystemExit("use either --npy or --dataset-root, not both")
        titles = args.titles or [p.stem for p in args.npy]
        if len(titles) != len(args.npy):
            raise SystemExit(f"{len(titles)} --titles for {len(args.npy)} --npy files")
        target = out if out.suffix.lower() == ".gif" else out / "side_by_side.gif"
        written += render_motions(
            [load_npy(p, "motion file") for p in args.npy], target, titles=titles, **common
        )
    elif args.dataset_root is not None:
        paths = DatasetPaths(args.dataset_root)
        ids = args.ids or read_split(args.dataset_root, args.split)[: args.num]
        for motion_id in ids:
            caption = read_captions(paths.text_file(motion_id))[0].caption
            motion = load_dataset_motion(paths, motion_id, spec, args.source)
            written += render_motions(
                [motion], out / f"{motion_id}.gif", titles=[f"{motion_id}: {caption}"], **common
            )
    else:
        raise SystemExit("give --dataset-root (render a split) or --npy FILE [FILE ...]")
    return written


if __name__ == "__main__":
    main()
