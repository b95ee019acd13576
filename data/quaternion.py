"""Vectorised quaternion and 6D-rotation helpers (NumPy and PyTorch).

Conventions (``shared/spec/motion-vq-evaluation.md`` section 1.1): quaternions are ``(..., 4)``
arrays ``(w, x, y, z)`` (scalar first), Hamilton product, active rotation of vectors. ``qmul(q, r)``
applies ``r`` first, then ``q``. The "cont6d" representation is the first two **columns** of the
rotation matrix, ``(R00, R10, R20, R01, R11, R21)``.

Every function broadcasts over leading dimensions and accepts either ``np.ndarray`` or
``torch.Tensor`` (returning the same kind), except :func:`qbetween`, whose degenerate-case fallback is
written for both as well. Nothing is modified in place, so torch inputs stay differentiable.
PyTorch is never imported here: a tensor can only be passed in if the caller already imported it.
"""

from __future__ import annotations

import sys
from functools import cache
from types import SimpleNamespace
from typing import Any

import numpy as np

Array = Any
"""``np.ndarray`` or ``torch.Tensor``."""

# Name used here -> (NumPy function, torch attribute); axis arguments are given positionally.
_OPS: dict[str, tuple[Any, str]] = {
    "stack": (np.stack, "stack"),
    "concat": (np.concatenate, "cat"),
    "cumsum": (np.cumsum, "cumsum"),
    "sqrt": (np.sqrt, "sqrt"),
    "cos": (np.cos, "cos"),
    "sin": (np.sin, "sin"),
    "arcsin": (np.arcsin, "asin"),
    "where": (np.where, "where"),
    "zeros_like": (np.zeros_like, "zeros_like"),
    "ones_like": (np.ones_like, "ones_like"),
    "abs": (np.abs, "abs"),
    "moveaxis": (np.moveaxis, "movedim"),
}

_NUMPY_NS = SimpleNamespace(is_torch=False, **{name: fn for name, (fn, _) in _OPS.items()})


def is_torch(x: object) -> bool:
    """True when ``x`` is a ``torch.Tensor`` (without importing torch)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


@cache
def _torch_namespace() -> SimpleNamespace:
    # Built once: array_namespace runs on every operation of the torch recovery path.
    torch = sys.modules["torch"]
    return SimpleNamespace(is_torch=True, **{name: getattr(torch, attr) for name, (_, attr) in _OPS.items()})


def array_namespace(x: Array) -> SimpleNamespace:
    """The handful of array functions used here (``_OPS``), for NumPy or PyTorch."""
    return _torch_namespace() if is_torch(x) else _NUMPY_NS


def _sum_last(x: Array) -> Array:
    """Sum over the last axis, keeping it (works for numpy and torch)."""
    return x.sum(-1)[..., None]


def stack_last(xp: SimpleNamespace, parts: list[Array]) -> Array:
    """Stack equal-shape arrays along a new last axis.

    Built component-first and returned as a moved-axis view, so that the ``x[..., i]`` component
    slices taken by the next operation are contiguous (about 2x faster than ``stack(parts, -1)``
    for the small trailing axes used here).
    """
    return xp.moveaxis(xp.stack(parts, 0), 0, -1)


def _components(x: Array, n: int) -> list[Array]:
    return [x[..., i] for i in range(n)]


def _cross_parts(a: list[Array], b: list[Array]) -> list[Array]:
    ax, ay, az = a
    bx, by, bz = b
    return [ay * bz - az * by, az * bx - ax * bz, ax * by - ay * bx]


def cross(a: Array, b: Array) -> Array:
    """Cross product over the last axis of ``(..., 3)`` arrays (broadcasting)."""
    xp = array_namespace(a if is_torch(a) else b)
    return stack_last(xp, _cross_parts(_components(a, 3), _components(b, 3)))


def normalize(v: Array, eps: float = 0.0) -> Array:
    """``v / |v|`` over the last axis (``eps`` is added to the norm; 0 keeps exact arithmetic)."""
    xp = array_namespace(v)
    return v / (xp.sqrt(_sum_last(v * v)) + eps)


def qnormalize(q: Array) -> Array:
    """Unit quaternion ``q / |q|``, shape ``(..., 4)``."""
    return normalize(q)


def qmul(q: Array, r: Array) -> Array:
    """Hamilton product ``q ⊗ r`` of ``(..., 4)`` quaternions (broadcasting): apply r, then q."""
    xp = array_namespace(q if is_torch(q) else r)
    w1, x1, y1, z1 = _components(q, 4)
    w2, x2, y2, z2 = _components(r, 4)
    return stack_last(
        xp,
        [
            w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2,
            w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
            w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
            w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2,
        ],
    )


def qinv(q: Array) -> Array:
    """Conjugate ``(w, -x, -y, -z)``: the inverse of a unit quaternion."""
    xp = array_namespace(q)
    return stack_last(xp, [q[..., 0], -q[..., 1], -q[..., 2], -q[..., 3]])


def qrot(q: Array, v: Array) -> Array:
    """Rotate ``(..., 3)`` vectors by unit ``(..., 4)`` quaternions: ``v + 2(w u×v + u×(u×v))``."""
    xp = array_namespace(q if is_torch(q) else v)
    w, *u = _components(q, 4)
    vs = _components(v, 3)
    uv = _cross_parts(u, vs)
    uuv = _cross_parts(u, uv)
    return stack_last(xp, [vs[i] + 2.0 * (w * uv[i] + uuv[i]) for i in range(3)])


def qbetween(a: Array, b: Array) -> Array:
    """Shortest-arc unit quaternion rotating direction ``a`` onto ``b``, shapes ``(..., 3)``.

    ``normalise(|a||b| + a·b, a×b)``. When ``a`` and ``b`` are exactly opposite the formula is 0/0
    (the published code returns NaN); here that case returns a half turn about an axis perpendicular
    to ``a``, so a bone pointing against its rest direction still gets a valid rotation.
    """
    xp = array_namespace(a if is_torch(a) else b)
    ax, ay, az = _components(a, 3)
    bx, by, bz = _components(b, 3)
    scale = xp.sqrt((ax * ax + ay * ay + az * az) * (bx * bx + by * by + bz * bz))
    parts = [scale + (ax * bx + ay * by + az * bz), *_cross_parts([ax, ay, az], [bx, by, bz])]
    norm = xp.sqrt(sum(p * p for p in parts))
    degenerate = norm <= 1e-12 * scale
    if bool(degenerate.any()):
        # Half turn about a × e, where e is the basis vector least aligned with a.
        a_full = a + 0.0 * b  # broadcast to the common shape
        absa = xp.abs(a_full)
        abx, aby, abz = absa[..., 0:1], absa[..., 1:2], absa[..., 2:3]
        use_x = (abx <= aby) & (abx <= abz)
        use_y = ~use_x & (aby <= abz)
        zero, one = xp.zeros_like(abx), xp.ones_like(abx)
        e = xp.where(
            use_x,
            xp.concat([one, zero, zero], -1),
            xp.where(use_y, xp.concat([zero, one, zero], -1), xp.concat([zero, zero, one], -1)),
        )
        half_turn = normalize(cross(a_full, e))
        parts = [xp.where(degenerate, 0.0 * p, p) for p in parts[:1]] + [
            xp.where(degenerate, half_turn[..., i], parts[i + 1]) for i in range(3)
        ]
        norm = xp.where(degenerate, xp.ones_like(norm), norm)
    return stack_last(xp, [p / norm for p in parts])


def yaw_quat(theta: Array) -> Array:
    """Rotation by ``theta`` radians about +Y: ``(cos θ/2, 0, sin θ/2, 0)``; maps +Z to (sin θ, 0, cos θ)."""
    xp = array_namespace(theta)
    half = theta * 0.5
    zero = xp.zeros_like(half)
    return stack_last(xp, [xp.cos(half), zero, xp.sin(half), zero])


def quat_to_matrix(q: Array) -> Array:
    """``(..., 4)`` quaternions → ``(..., 3, 3)`` rotation matrices (``2/|q|²`` factor, no unit assumption)."""
    xp = array_namespace(q)
    w, x, y, z = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    s = 2.0 / (w * w + x * x + y * y + z * z)
    xx, yy, zz = x * x * s, y * y * s, z * z * s
    xy, xz, yz = x * y * s, x * z * s, y * z * s
    wx, wy, wz = w * x * s, w * y * s, w * z * s
    rows = [
        stack_last(xp, [1.0 - (yy + zz), xy - wz, xz + wy]),
        stack_last(xp, [xy + wz, 1.0 - (xx + zz), yz - wx]),
        stack_last(xp, [xz - wy, yz + wx, 1.0 - (xx + yy)]),
    ]
    return xp.stack(rows, -2)


def matrix_to_cont6d(m: Array) -> Array:
    """``(..., 3, 3)`` matrices → ``(..., 6)`` = first two columns ``(R00, R10, R20, R01, R11, R21)``."""
    xp = array_namespace(m)
    return xp.concat([m[..., :, 0], m[..., :, 1]], -1)


def quat_to_cont6d(q: Array) -> Array:
    """``(..., 4)`` quaternions → ``(..., 6)`` cont6d (first two matrix columns)."""
    xp = array_namespace(q)
    w, x, y, z = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    s = 2.0 / (w * w + x * x + y * y + z * z)
    return stack_last(
        xp,
        [
            1.0 - s * (y * y + z * z),
            s * (x * y + z * w),
            s * (x * z - y * w),
            s * (x * y - z * w),
            1.0 - s * (x * x + z * z),
            s * (y * z + x * w),
        ],
    )


def cont6d_to_matrix(c: Array) -> Array:
    """``(..., 6)`` cont6d → ``(..., 3, 3)``: x = n(c[:3]), z = n(x × c[3:]), y = z × x; columns [x, y, z]."""
    xp = array_namespace(c)
    x = normalize(c[..., 0:3])
    z = normalize(cross(x, c[..., 3:6]))
    y = cross(z, x)
    return xp.stack([x, y, z], -1)
