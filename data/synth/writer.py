"""Write one motion in the HumanML3D layout (also used by the data engine for imperfect motions).

```
<root>/new_joints/<id>.npy        float32 (T-1, J, 3)  = recover_from_ric(features, J)
<root>/new_joint_vecs/<id>.npy    float32 (T-1, D)     = joints_to_features(rendered joints)
<root>/texts/<id>.txt             caption#word/POS ...#from#to, one line per caption
<root>/attributes/<id>.json       the structured description and per-caption stated attributes
```
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from data.layout import DatasetPaths
from data.motion_repr import joints_to_features, recover_from_ric
from data.specs import DatasetSpec, get_dataset_spec
from data.synth.captions import Caption


def write_motion(
    root: str | Path,
    motion_id: str,
    joints: np.ndarray,
    captions: Sequence[Caption],
    attributes: dict[str, Any],
    dataset: str | DatasetSpec = "humanml3d",
) -> np.ndarray:
    """Write features, canonical joints, captions and attributes of one motion.

    Args:
        root: dataset folder (sub-folders are created).
        motion_id: file stem, e.g. ``"000123"``.
        joints: ``(T, J, 3)`` rendered joints in the dataset's skeleton and units.
        captions: at least one caption; each becomes one ``texts`` line.
        attributes: JSON-safe dict (program, subject, style seed, ...); ``captions`` (text, stated
            attributes, from/to per line) and frame counts are added.
        dataset: dataset name or spec.

    Returns:
        ``(T-1, D)`` float32 features as written.
    """
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
    for folder in (paths.vecs_dir, paths.joints_dir, paths.texts_dir, paths.attributes_dir):
        folder.mkdir(parents=True, exist_ok=True)
    np.save(paths.vec_file(motion_id), feats)
    np.save(paths.joint_file(motion_id), canon)
    paths.text_file(motion_id).write_text("".join(c.to_line() + "\n" for c in captions))
    meta = dict(attributes)
    meta.update(
        id=motion_id,
        dataset=spec.name,
        fps=spec.fps,
        num_frames=int(feats.shape[0]),
        rendered_frames=int(np.asarray(joints).shape[0]),
        captions=[c.to_dict() for c in captions],
    )
    paths.attributes_file(motion_id).write_text(json.dumps(meta, indent=1, sort_keys=True))
    return feats


def read_attributes(root: str | Path, motion_id: str) -> dict[str, Any]:
    """The ``attributes/<id>.json`` of a SynthML motion (raises naming the file if missing)."""
    path = DatasetPaths(root).attributes_file(motion_id)
    if not path.is_file():
        raise FileNotFoundError(f"SynthML attributes file not found: {path} (is this a SynthML folder?)")
    return json.loads(path.read_text())
