"""Write one motion in the HumanML3D layout (also used by the data engine for imperfect motions).

```
<root>/new_joints/<id>.npy        float32 (T-1, J, 3)  = recover_from_ric(features, J)
<root>/new_joint_vecs/<id>.npy    float32 (T-1, D)     = joints_to_features(rendered joints)
<root>/texts/<id>.txt             caption#word/POS ...#from#to, one line per caption
<root>/attributes/<id>.json       the structured description and per-caption stated attributes
```

Every file is written atomically (``data.run_folder.atomic_write``: a temporary file in the same
folder, then a rename; without fsync, as thousands are written: an OS crash may lose a file, which
the callers' records detect by size and sha256), so a process killed mid-write leaves each file
either complete or absent, never half-written. A motion is four files, so a killed writer may leave some of them; callers
that must know (the data engine) record the files' sha256 (:func:`write_motion_files`) and rewrite
a motion whose record is incomplete.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from data.layout import DatasetPaths
from data.motion_repr import joints_to_features, recover_from_ric
from data.run_folder import atomic_write_bytes
from data.specs import DatasetSpec, get_dataset_spec
from data.synth.captions import Caption


def motion_files(motion_id: str) -> tuple[str, ...]:
    """Relative paths of a motion's four files: features, joints, captions, attributes."""
    rel = DatasetPaths(Path())
    files = (rel.vec_file(motion_id), rel.joint_file(motion_id), rel.text_file(motion_id),
             rel.attributes_file(motion_id))  # fmt: skip
    return tuple(p.as_posix() for p in files)


@dataclass(frozen=True)
class WrittenMotion:
    """What :func:`write_motion_files` wrote."""

    features: np.ndarray
    """``(T-1, D)`` float32 features as written."""
    sha256: dict[str, str]
    """``{relative path: hex sha256}`` of the four files (see :func:`motion_files`)."""


def write_motion(
    root: str | Path,
    motion_id: str,
    joints: np.ndarray,
    captions: Sequence[Caption],
    attributes: dict[str, Any],
    dataset: str | DatasetSpec = "humanml3d",
    *,
    tag: str = "",
) -> np.ndarray:
    """Write features, canonical joints, captions and attributes of one motion (atomically).

    Args:
        root: dataset folder (sub-folders are created).
        motion_id: file stem, e.g. ``"000123"``.
        joints: ``(T, J, 3)`` rendered joints in the dataset's skeleton and units.
        captions: at least one caption; each becomes one ``texts`` line.
        attributes: JSON-safe dict (program, subject, style seed, ...); ``captions`` (text, stated
            attributes, from/to per line) and frame counts are added.
        dataset: dataset name or spec.
        tag: put into the names of the temporary files (e.g. ``"<run id>-"``), so that the
            temporaries of a killed writer can be found and removed.

    Returns:
        ``(T-1, D)`` float32 features as written.
    """
    return write_motion_files(root, motion_id, joints, captions, attributes, dataset, tag=tag).features


def write_motion_files(
    root: str | Path,
    motion_id: str,
    joints: np.ndarray,
    captions: Sequence[Caption],
    attributes: dict[str, Any],
    dataset: str | DatasetSpec = "humanml3d",
    *,
    tag: str = "",
) -> WrittenMotion:
    """:func:`write_motion`, also returning the sha256 of each file written."""
    spec = get_dataset_spec(dataset)
    if not captions:
        raise ValueError(f"write_motion({motion_id!r}): at least one caption is required")
    for cap in captions:
        if "#" in cap.text or "\n" in cap.text:
            raise ValueError(f"write_motion({motion_id!r}): caption contains '#' or a newline: {cap.text!r}")
    paths = DatasetPaths(root)
    # continuous_yaw: SynthML turns in circles a lot; the published root-yaw formula flips the sign of
    # one frame's turn whenever the facing crosses +-180 deg, which would put a glitch into new_joints.
    feats = joints_to_features(np.asarray(joints, dtype=np.float64), spec, continuous_yaw=True).astype(
        np.float32
    )
    canon = np.asarray(recover_from_ric(feats, spec.joints_num), dtype=np.float32)
    meta = dict(attributes)
    meta.update(
        id=motion_id,
        dataset=spec.name,
        fps=spec.fps,
        num_frames=int(feats.shape[0]),
        rendered_frames=int(np.asarray(joints).shape[0]),
        captions=[c.to_dict() for c in captions],
    )
    contents = (
        _npy_bytes(feats),
        _npy_bytes(canon),
        "".join(c.to_line() + "\n" for c in captions).encode("utf-8"),
        json.dumps(meta, indent=1, sort_keys=True).encode("utf-8"),
    )
    sha = {
        rel: atomic_write_bytes(paths.root / rel, data, tag=tag, durable=False)
        for rel, data in zip(motion_files(motion_id), contents, strict=True)
    }
    return WrittenMotion(feats, sha)


def _npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def read_attributes(root: str | Path, motion_id: str) -> dict[str, Any]:
    """The ``attributes/<id>.json`` of a SynthML motion (raises naming the file if missing)."""
    path = DatasetPaths(root).attributes_file(motion_id)
    if not path.is_file():
        raise FileNotFoundError(f"SynthML attributes file not found: {path} (is this a SynthML folder?)")
    return json.loads(path.read_text())
