"""Access to ``tests/golden/`` and the deterministic stand-in checkpoints its goldens were made with.

The golden files were computed once by running the published implementations (see
``tests/golden/README.md``). The VQ-VAE and evaluator goldens used synthetic weights in the released
file layouts, drawn from a layout JSON and a seed. :func:`draw_state_dict` redraws them from the
documented recipe (written for this project from that description, not copied):

    tensor ``key`` of module ``m``: ``numpy.random.RandomState((seed * 1000003 + crc32(m + "/" + key))
    mod 2**32).standard_normal(numel)`` in float64, scaled by its ``init`` kind, cast to float32:
    weight N/sqrt(prod(shape[1:])), bias 0.02 N, norm_weight 1 + 0.02 N, norm_bias 0.02 N,
    hidden 0.5 N, codebook ``codebook_std`` N.

``ckpt_checksums.json`` holds the per-tensor sum and sum of squares of the weights the goldens used,
so a test can tell a generator problem (checksums differ) from an implementation problem.
"""

from __future__ import annotations

import json
import math
import zlib
from collections import OrderedDict
from functools import cache
from pathlib import Path

import numpy as np
import torch

GOLDEN_DIR = Path(__file__).resolve().parent / "golden"

GUO_LAYOUT = GOLDEN_DIR / "guo_evaluator_t2m_layout.json"
VQ_LAYOUT = GOLDEN_DIR / "t2m_gpt_vqvae_layout.json"
CHECKSUMS = GOLDEN_DIR / "ckpt_checksums.json"

_INIT_SCALE = {"bias": 0.02, "norm_bias": 0.02, "hidden": 0.5}


@cache
def _npz(name: str) -> dict[str, np.ndarray]:
    with np.load(GOLDEN_DIR / f"{name}.npz", allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def golden(name: str) -> dict[str, np.ndarray]:
    """Arrays of ``tests/golden/<name>.npz`` (a fresh dict of read-only arrays)."""
    out = {}
    for key, value in _npz(name).items():
        view = value.view()
        view.flags.writeable = False
        out[key] = view
    return out


def tolerance(expected: np.ndarray) -> float:
    """The golden README's max-abs-error bound: ``1e-4 * max(1, max|expected|)``."""
    return 1e-4 * max(1.0, float(np.abs(np.asarray(expected, dtype=np.float64)).max()))


def assert_close_golden(actual: object, expected: np.ndarray, what: str) -> float:
    """Assert ``max|actual - expected| <= tolerance(expected)``; returns the max error."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != golden {expected.shape}"
    err = float(np.abs(actual - expected).max())
    bound = tolerance(expected)
    assert err <= bound, f"{what}: max abs error {err:.3g} exceeds the golden tolerance {bound:.3g}"
    return err


@cache
def load_layout(path: Path) -> dict:
    return json.loads(Path(path).read_text())


@cache
def checksums() -> dict:
    return json.loads(CHECKSUMS.read_text())


def draw_tensor(entry: dict, seed: int, name: str, codebook_std: float) -> torch.Tensor:
    """One stand-in tensor (see the module docstring); ``name`` = ``module/key`` seeds its stream."""
    shape = [int(s) for s in entry["shape"]]
    stream = np.random.RandomState((int(seed) * 1000003 + zlib.crc32(name.encode("utf-8"))) % 2**32)
    z = stream.standard_normal(math.prod(shape))
    kind = entry["init"]
    if kind == "weight":
        a = z / math.sqrt(math.prod(shape[1:]) if len(shape) > 1 else 1)
    elif kind == "norm_weight":
        a = 1.0 + 0.02 * z
    elif kind == "codebook":
        a = codebook_std * z
    elif kind in _INIT_SCALE:
        a = _INIT_SCALE[kind] * z
    else:
        raise ValueError(f"{name}: unknown init kind {kind!r} in the layout file")
    return torch.from_numpy(a.reshape(shape)).to(getattr(torch, entry.get("dtype", "float32")))


def draw_state_dict(layout: dict, module: str, seed: int) -> OrderedDict[str, torch.Tensor]:
    """Stand-in state dict of ``layout["modules"][module]`` in the layout's key order."""
    std = float(checksums()["vqvae"]["codebook_std"])
    return OrderedDict(
        (e["key"], draw_tensor(e, seed, f"{module}/{e['key']}", std))
        for e in layout["modules"][module]["state_dict"]
    )


def checksum_mismatches(state: dict[str, torch.Tensor], expected: dict[str, list[float]]) -> list[str]:
    """Keys whose (sum, sum of squares) differ from ``expected`` (relative 1e-6), or are missing."""
    bad = []
    for key, (s, s2) in expected.items():
        if key not in state:
            bad.append(key)
            continue
        v = state[key].double()
        cs, cs2 = float(v.sum()), float((v * v).sum())
        if abs(cs - s) > 1e-6 * max(1.0, abs(s2) ** 0.5) or abs(cs2 - s2) > 1e-6 * max(1.0, abs(s2)):
            bad.append(key)
    return bad


GUO_MODULES = ("text_encoder", "motion_encoder", "movement_encoder")


def guo_checkpoint(seed: int | None = None) -> dict:
    """Stand-in ``finest.tar`` dict: three state dicts, Adam states for two, ``epoch``, ``iter``."""
    layout = load_layout(GUO_LAYOUT)
    seed = int(checksums()["guo_evaluator"]["seed"]) if seed is None else seed
    ckpt: dict = {m: draw_state_dict(layout, m, seed) for m in GUO_MODULES}
    for m in ("text_encoder", "motion_encoder"):
        n_params = sum(
            1 for e in layout["modules"][m]["state_dict"] if e.get("kind", "parameter") == "parameter"
        )
        ckpt[f"opt_{m}"] = {
            "state": {},
            "param_groups": [{"lr": 1e-4, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0,
                              "amsgrad": False, "params": list(range(n_params))}],
        }  # fmt: skip
    ckpt["epoch"] = 100
    ckpt["iter"] = 123456
    return ckpt


def vq_checkpoint(seed: int | None = None) -> dict:
    """Stand-in T2M-GPT VQ-VAE checkpoint ``{'net': state_dict}``."""
    seed = int(checksums()["vqvae"]["seed"]) if seed is None else seed
    return {"net": draw_state_dict(load_layout(VQ_LAYOUT), "net", seed)}
