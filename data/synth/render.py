"""Kinematic renderer: ``MotionProgram`` + ``Subject`` + ``style_seed`` -> joint positions.

Every action is planned once (durations, footsteps, repetition timing) and then evaluated as a
function of continuous time, so the same program renders at any frame rate (20 fps for HumanML3D,
12.5 fps for KIT-ML) and the frames are just samples of one motion. Per-frame pose parameters
(``body.PoseParams``: root, facing, torso angles, ankle and wrist targets) are solved into joints by
``body.solve_pose`` with exact bone lengths.

Style (``Style.from_seed``) is everything the caption does not state: arm swing, step length,
cadence, tempo, per-repetition timing jitter, posture offsets, stance width, which foot leads and
pauses. It depends only on ``style_seed`` (and on the action's index for jitter), so a perturbed
program rendered with the same subject and seed keeps the same style.

Feet: locomotion places footsteps under the hip at mid-stance and swings each foot between
plants; planted feet do not move (their per-frame displacement is zero, so foot contacts fire),
and the pelvis is lowered wherever a leg could not reach its planted ankle.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from data.specs import get_dataset_spec
from data.synth.body import SIDES, BodyGeometry, PoseParams, Subject, solve_pose, to_dataset_skeleton
from data.synth.program import FAMILIES, ActionSpec, MotionProgram

MIN_SECONDS = 2.05
"""Shortest rendered motion (41 frames at 20 fps, i.e. 40 feature rows)."""
MAX_SECONDS = 9.8
"""Longest rendered motion (197 frames at 20 fps, i.e. 196 feature rows)."""
BLEND_SECONDS = 0.5
"""Cross-fade between consecutive actions of a sequence."""

# Period multipliers: slow actions take longer.
_TEMPO = {"slow": 1.45, "normal": 1.0, "fast": 0.68}


# ------------------------------------------------------------------------------------------------
# Style
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Style:
    """Motion style not stated in captions, drawn from a seed (see the module docstring)."""

    arm_swing: float
    step: float
    cadence: float
    tempo: float
    jitter: float
    lean: float
    roll: float
    head_pitch: float
    stance: float
    toe_out: float
    arm_bend: float
    arm_out: float
    lead: int
    start_pause: float
    gap: float
    sway: float
    seed: int

    @classmethod
    def from_seed(cls, seed: int) -> Style:
        rng = np.random.default_rng([int(seed), 7919])
        u = rng.uniform
        return cls(
            arm_swing=u(0.5, 1.4),
            step=u(0.88, 1.12),
            cadence=u(0.92, 1.08),
            tempo=u(0.85, 1.15),
            jitter=u(0.02, 0.1),
            lean=u(-0.04, 0.12),
            roll=u(-0.04, 0.04),
            head_pitch=u(-0.1, 0.2),
            stance=u(0.85, 1.25),
            toe_out=u(0.0, 0.25),
            arm_bend=u(0.86, 0.97),
            arm_out=u(0.0, 0.08),
            lead=int(rng.integers(2)),
            start_pause=u(0.0, 0.35),
            gap=u(0.0, 0.3),
            sway=u(0.0, 0.015),
            seed=int(seed),
        )

    def to_dict(self) -> dict:
        return asdict(self)


# ------------------------------------------------------------------------------------------------
# Time-curve helpers (vectorised, continuous time)
# ------------------------------------------------------------------------------------------------


def ease(t: np.ndarray, t0: float, t1: float) -> np.ndarray:
    """0 before t0, 1 after t1, quintic smoothstep in between."""
    u = np.clip((np.asarray(t, dtype=np.float64) - t0) / max(t1 - t0, 1e-6), 0.0, 1.0)
    return u * u * u * (u * (6.0 * u - 15.0) + 10.0)


def bump(t: np.ndarray, t0: float, t1: float) -> np.ndarray:
    """Raised cosine: 0 outside [t0, t1], 1 at the middle."""
    u = np.clip((np.asarray(t, dtype=np.float64) - t0) / max(t1 - t0, 1e-6), 0.0, 1.0)
    return 0.5 * (1.0 - np.cos(2.0 * np.pi * u))


def window(t: np.ndarray, t0: float, t1: float, ramp: float) -> np.ndarray:
    """1 inside [t0 + ramp, t1 - ramp], easing to 0 at t0 and t1."""
    ramp = min(ramp, 0.5 * (t1 - t0))
    return ease(t, t0, t0 + ramp) * (1.0 - ease(t, t1 - ramp, t1))


def keyframes(t: np.ndarray, times: list[float], values: list) -> np.ndarray:
    """Piecewise eased interpolation through (time, value) keys; constant outside. -> (T, *value)."""
    vals = np.asarray(values, dtype=np.float64)
    out = np.broadcast_to(vals[0], (len(t), *vals.shape[1:])).copy()
    for k in range(1, len(times)):
        w = ease(t, times[k - 1], times[k]).reshape(-1, *([1] * (vals.ndim - 1)))
        out += w * (vals[k] - vals[k - 1])
    return out


def _rep_starts(rng: np.random.Generator, n: int, period: float, jitter: float, t0: float) -> list[float]:
    """Start times of n repetitions whose periods vary by ``jitter`` (relative sd)."""
    periods = period * np.clip(1.0 + jitter * rng.standard_normal(n), 0.75, 1.25)
    return list(t0 + np.concatenate([[0.0], np.cumsum(periods)]))


def _yaw_vec(yaw: np.ndarray | float, x: float, z: float) -> np.ndarray:
    """Heading-frame vector (x, 0, z) rotated by yaw into world XZ -> (..., 3)."""
    yaw = np.asarray(yaw, dtype=np.float64)
    c, s = np.cos(yaw), np.sin(yaw)
    return np.stack([c * x + s * z, np.zeros_like(yaw), -s * x + c * z], -1)


# ------------------------------------------------------------------------------------------------
# Footstep plans
# ------------------------------------------------------------------------------------------------


class FootPlan:
    """Planted feet that swing between plants; ``evaluate`` is vectorised over time."""

    def __init__(self, start: np.ndarray, start_yaw: np.ndarray) -> None:
        self.start = np.asarray(start, dtype=np.float64)  # (2, 3)
        self.start_yaw = np.asarray(start_yaw, dtype=np.float64)  # (2,)
        self.events: list[list[tuple]] = [[], []]

    def step(self, foot: int, t0: float, t1: float, pos: np.ndarray, yaw: float, lift: float = 0.08) -> None:
        """Swing ``foot`` during [t0, t1] to ``pos`` (ankle) with heading ``yaw``; ``lift`` = peak height."""
        self.events[foot].append(
            (float(t0), float(t1), np.asarray(pos, dtype=np.float64), float(yaw), float(lift))
        )

    def last(self, foot: int) -> tuple[float, np.ndarray, float]:
        """(end time, position, yaw) of the foot's last plant."""
        if not self.events[foot]:
            return 0.0, self.start[foot], float(self.start_yaw[foot])
        t0, t1, pos, yaw, _ = self.events[foot][-1]
        return t1, pos, yaw

    def evaluate(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Ankle targets (T, 2, 3), foot yaw (T, 2) and toe pitch (T, 2) at times t."""
        n = len(t)
        feet, yaws, pitch = np.zeros((n, 2, 3)), np.zeros((n, 2)), np.zeros((n, 2))
        for k in range(2):
            ev = sorted(self.events[k], key=lambda e: e[0])
            if not ev:
                feet[:, k] = self.start[k]
                yaws[:, k] = self.start_yaw[k]
                continue
            t0 = np.array([e[0] for e in ev])
            t1 = np.array([e[1] for e in ev])
            to = np.stack([e[2] for e in ev])
            frm = np.concatenate([self.start[k][None], to[:-1]])
            yto = np.array([e[3] for e in ev])
            yfrm = np.concatenate([[self.start_yaw[k]], yto[:-1]])
            lift = np.array([e[4] for e in ev])
            idx = np.searchsorted(t0, t, side="right") - 1
            before = idx < 0
            i = np.maximum(idx, 0)
            u = np.clip((t - t0[i]) / np.maximum(t1[i] - t0[i], 1e-6), 0.0, 1.0)
            s = ease(u, 0.0, 1.0)
            pos = frm[i] + (to[i] - frm[i]) * s[:, None]
            pos[:, 1] += lift[i] * 4.0 * u * (1.0 - u)
            yaw = yfrm[i] + (yto[i] - yfrm[i]) * s
            pos[before] = self.start[k]
            yaw[before] = self.start_yaw[k]
            feet[:, k], yaws[:, k] = pos, yaw
            pitch[:, k] = np.where(before, 0.0, 0.25 * np.sin(np.pi * u) * (lift[i] > 0.02))
        return feet, yaws, pitch


# ------------------------------------------------------------------------------------------------
# Actions: plan -> (duration, evaluate(t) -> PoseParams) in the action's local frame
# ------------------------------------------------------------------------------------------------


@dataclass
class Ctx:
    """What every action planner needs."""

    geom: BodyGeometry
    style: Style
    rng: np.random.Generator

    @property
    def half_width(self) -> float:
        return self.geom.hip_half_width * self.style.stance

    @property
    def shoulder_x(self) -> float:
        off = self.geom.offsets
        return float(off[13, 0] + off[16, 0])

    def neutral_feet(self, x: float = 0.0, z: float = 0.0, yaw: float = 0.0) -> np.ndarray:
        """(2, 3) ankle positions standing at (x, z) facing yaw."""
        out = np.zeros((2, 3))
        for k in range(2):
            out[k] = np.array([x, 0.0, z]) + _yaw_vec(yaw, SIDES[k] * self.half_width, 0.02)
            out[k, 1] = self.geom.ankle_height
        return out

    def rest_hands(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(n, 2, 3) relaxed wrist targets and (n, 2, 3) elbow poles."""
        reach = self.geom.arm_reach * self.style.arm_bend
        hands, poles = np.zeros((n, 2, 3)), np.zeros((n, 2, 3))
        for k in range(2):
            hands[:, k] = [SIDES[k] * (0.03 + self.style.arm_out), -reach, 0.04]
            poles[:, k] = [SIDES[k] * 0.3, 0.0, -1.0]
        return hands, poles

    def neutral(self, t: np.ndarray) -> PoseParams:
        """Standing still (with slight breathing sway) for every t."""
        n = len(t)
        st = self.style
        hands, poles = self.rest_hands(n)
        root = np.zeros((n, 3))
        root[:, 1] = self.geom.stand_height
        root[:, 0] = st.sway * np.sin(2 * np.pi * 0.25 * t + st.seed % 7)
        feet = np.repeat(self.neutral_feet()[None], n, 0)
        foot_yaw = np.repeat(np.array([[st.toe_out, -st.toe_out]]), n, 0)
        spine = np.zeros((n, 3))
        spine[:, 0] = st.lean + 0.01 * np.sin(2 * np.pi * 0.3 * t)
        spine[:, 1] = st.roll
        neck = np.zeros((n, 2))
        neck[:, 0] = st.head_pitch
        return PoseParams(
            root=root,
            yaw=np.zeros(n),
            pelvis_tilt=np.zeros((n, 2)),
            spine=spine,
            neck=neck,
            feet=feet,
            foot_yaw=foot_yaw,
            foot_pitch=np.zeros((n, 2)),
            hands=hands,
            elbow_pole=poles,
        )


Plan = tuple[float, Callable[[np.ndarray], PoseParams]]

# Locomotion: speed (m/s) and stride cycles per second per speed; stance fraction and bob.
_GAITS = {
    "walk": {"speed": {"slow": 0.7, "normal": 1.25, "fast": 1.8}, "freq": {"slow": 0.72, "normal": 0.92, "fast": 1.08},
             "stance": 0.62, "lift": 0.07, "bob": 0.018, "lean": 0.03, "swing": 0.35},
    "run": {"speed": {"slow": 2.2, "normal": 2.9, "fast": 3.6}, "freq": {"slow": 1.35, "normal": 1.45, "fast": 1.55},
            "stance": 0.38, "lift": 0.16, "bob": -0.04, "lean": 0.14, "swing": 0.6},
}  # fmt: skip


_MAX_CIRCLE_ACCEL = 6.0
"""m/s^2; the speed of a circle is lowered until its centripetal acceleration is below this."""


def _plan_locomotion(act: ActionSpec, ctx: Ctx) -> Plan:
    gait = _GAITS[act.family]
    st, geom = ctx.style, ctx.geom
    leg_scale = (geom.thigh + geom.shin) / 0.83
    v0 = gait["speed"][act.speed] * st.step * leg_scale
    freq = gait["freq"][act.speed] * st.cadence
    direction = act.direction
    if direction == "backward":
        v0 *= 0.6
        freq *= 0.85
    dur = float(act.duration)
    ramp = min(0.6, 0.3 * dur)
    if direction.startswith("circle"):
        # Cap the centripetal acceleration (v^2 / r with r = v * T / 2pi) so short circles are walked
        # or jogged around rather than spun on the spot with feet out of reach.
        v0 = min(v0, _MAX_CIRCLE_ACCEL * (dur - ramp) / (2.0 * np.pi))
    dt = 0.01
    tf = np.arange(0.0, dur + 2 * dt, dt)
    v = v0 * ease(tf, 0.0, ramp) * (1.0 - ease(tf, dur - ramp, dur))
    dist = np.concatenate([[0.0], np.cumsum(0.5 * (v[1:] + v[:-1]) * dt)])
    turn = {
        "left": 1.0,
        "right": -1.0,
        "turn_left": 1.0,
        "turn_right": -1.0,
        "circle_left": 1.0,
        "circle_right": -1.0,
    }
    sign = turn.get(direction, 0.0)
    if direction in ("left", "right"):
        t_turn = max(min(1.4, 0.45 * dur), 0.5 * np.pi * v0 / _MAX_CIRCLE_ACCEL)
        yaw_f = sign * 0.5 * np.pi * ease(tf, 0.1, 0.1 + t_turn)
    elif direction in ("turn_left", "turn_right"):
        mid = 0.5 * dur
        yaw_f = sign * 0.5 * np.pi * ease(tf, mid - 0.6, mid + 0.6)
    elif direction in ("circle_left", "circle_right"):
        yaw_f = sign * 2.0 * np.pi * dist / max(dist[-1], 1e-6)
    else:
        yaw_f = np.zeros_like(tf)
    move = yaw_f + (np.pi if direction == "backward" else 0.0)
    vel = np.stack([v * np.sin(move), v * np.cos(move)], -1)
    xz = np.concatenate([[[0.0, 0.0]], np.cumsum(0.5 * (vel[1:] + vel[:-1]) * dt, 0)])

    def path(t: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        tt = np.clip(np.asarray(t, dtype=np.float64), 0.0, dur)
        return np.stack([np.interp(tt, tf, xz[:, 0]), np.interp(tt, tf, xz[:, 1])], -1), np.interp(
            tt, tf, yaw_f
        )

    beta = gait["stance"]
    feet = FootPlan(ctx.neutral_feet(), np.array([st.toe_out, -st.toe_out]))
    phase_off = [0.0, 0.0]
    phase_off[st.lead] = -beta
    phase_off[1 - st.lead] = 0.5 - beta
    swing_len = (1.0 - beta) / freq
    for k in range(2):
        n = -1
        while True:
            n += 1
            s0 = (n + phase_off[k] + beta) / freq + 0.05
            if s0 < 0.05:
                continue
            if s0 > dur:
                break
            s1 = s0 + swing_len
            mid = s1 + 0.5 * beta / freq
            p, y = path(mid)
            target = np.array([p[0], 0.0, p[1]]) + _yaw_vec(y, SIDES[k] * ctx.half_width, 0.02)
            target[1] = geom.ankle_height
            feet.step(k, s0, s1, target, float(y) + SIDES[k] * st.toe_out, gait["lift"])
    # Close the stance: every foot ends next to the pelvis where it stopped.
    end_p, end_y = path(dur)
    final = ctx.neutral_feet(end_p[0], end_p[1], float(end_y))
    t_close = max(feet.last(0)[0], feet.last(1)[0]) + 0.05
    order = sorted(range(2), key=lambda k: feet.last(k)[0])
    end = dur
    for k in order:
        if np.linalg.norm(feet.last(k)[1] - final[k]) > 0.03:
            sw = max(0.35, swing_len)
            feet.step(k, t_close, t_close + sw, final[k], float(end_y) + SIDES[k] * st.toe_out, 0.06)
            t_close += sw + 0.05
            end = max(end, t_close)
    total = end + 0.1

    def evaluate(t: np.ndarray) -> PoseParams:
        p = ctx.neutral(t)
        xz_t, yaw_t = path(t)
        speed = np.interp(np.clip(t, 0, dur), tf, v) / max(v0, 1e-6)
        phase = freq * t
        p.root[:, 0] += xz_t[:, 0]
        p.root[:, 2] += xz_t[:, 1]
        bob_phase = np.cos(4 * np.pi * (phase - phase_off[0] - 0.5 * beta))
        p.root[:, 1] += speed * (gait["bob"] * bob_phase - (0.03 if act.family == "run" else 0.005))
        p.yaw = yaw_t
        p.feet, p.foot_yaw, p.foot_pitch = feet.evaluate(t)
        sign_back = -1.0 if direction == "backward" else 1.0
        p.spine[:, 0] += speed * gait["lean"] * sign_back
        reach = ctx.geom.arm_reach * (st.arm_bend if act.family == "walk" else 0.62)
        for k in range(2):
            psi = -gait["swing"] * st.arm_swing * speed * np.cos(2 * np.pi * (phase - phase_off[k]))
            carry = 0.0 if act.family == "walk" else 0.5
            ang = psi + carry * speed
            p.hands[:, k] = np.stack(
                [np.full_like(t, SIDES[k] * (0.04 + st.arm_out)), -reach * np.cos(ang), reach * np.sin(ang)],
                -1,
            )
        p.spine[:, 2] += 0.12 * st.arm_swing * speed * np.cos(2 * np.pi * (phase - phase_off[0]))
        return p

    return total, evaluate


def _jump_flight(height: float) -> float:
    return 2.0 * math.sqrt(2.0 * max(height, 0.02) / 9.81)


def _plan_jump(act: ActionSpec, ctx: Ctx) -> Plan:
    st, geom = ctx.style, ctx.geom
    height = {"low": 0.1, "normal": 0.22, "high": 0.38}[act.amplitude] * (0.9 + 0.2 * ctx.rng.random())
    dist = {"up": (0.0, 0.0), "forward": (0.0, 0.45), "backward": (0.0, -0.3), "left": (0.35, 0.0),
            "right": (-0.35, 0.0)}[act.direction]  # fmt: skip
    flight = _jump_flight(height)
    prep, land = 0.45 * st.tempo, 0.45 * st.tempo
    starts = _rep_starts(ctx.rng, act.repetitions, prep + flight + land + 0.15, st.jitter, 0.1)
    feet = FootPlan(ctx.neutral_feet(), np.array([st.toe_out, -st.toe_out]))
    crouch = 0.06 + 0.35 * height
    jumps = []
    for i in range(act.repetitions):
        ta = starts[i] + prep
        tb = ta + flight
        shift = np.array([dist[0] * (i + 1), 0.0, dist[1] * (i + 1)])
        for k in range(2):
            target = ctx.neutral_feet()[k] + shift
            feet.step(k, ta, tb, target, SIDES[k] * st.toe_out, height + 0.04)
        jumps.append((starts[i], ta, tb))
    total = starts[-1] + 0.2

    def evaluate(t: np.ndarray) -> PoseParams:
        p = ctx.neutral(t)
        p.feet, p.foot_yaw, p.foot_pitch = feet.evaluate(t)
        for t0, ta, tb in jumps:
            u = np.clip((t - ta) / (tb - ta), 0.0, 1.0)
            p.root[:, 1] += (
                height * 4 * u * (1 - u)
                - crouch * bump(t, t0, ta + 0.08)
                - crouch * bump(t, tb - 0.08, tb + land)
            )
            w = ease(t, ta, tb)
            p.root[:, 0] += dist[0] * w
            p.root[:, 2] += dist[1] * w
            p.spine[:, 0] += 0.35 * bump(t, t0, ta + 0.1) + 0.25 * bump(t, tb - 0.1, tb + land)
            arm = -0.7 * bump(t, t0, ta) + 1.6 * bump(t, ta - 0.15, tb + 0.1)
            for k in range(2):
                reach = geom.arm_reach * st.arm_bend
                p.hands[:, k, 1] = -reach * np.cos(arm)
                p.hands[:, k, 2] = reach * np.sin(arm)
        return p

    return total, evaluate


def _plan_hop(act: ActionSpec, ctx: Ctx) -> Plan:
    st, geom = ctx.style, ctx.geom
    k_st = 0 if act.limb == "left" else 1
    k_up = 1 - k_st
    height = 0.1 * (0.8 + 0.4 * ctx.rng.random())
    flight = _jump_flight(height)
    step = 0.25 if act.direction == "forward" else 0.0
    starts = _rep_starts(ctx.rng, act.repetitions, (0.25 + flight + 0.2) * st.tempo, st.jitter, 0.7)
    feet = FootPlan(ctx.neutral_feet(), np.array([st.toe_out, -st.toe_out]))
    hops = []
    for i in range(act.repetitions):
        ta = starts[i] + 0.2 * st.tempo
        tb = ta + flight
        target = ctx.neutral_feet()[k_st] + np.array([0.0, 0.0, step * (i + 1)])
        feet.step(k_st, ta, tb, target, SIDES[k_st] * st.toe_out, height + 0.03)
        hops.append((starts[i], ta, tb))
    t_end = starts[-1] + 0.3
    total = t_end + 0.7
    # The free foot (overridden while lifted) is put down next to the hopping foot at the end.
    final = ctx.neutral_feet()[k_up] + np.array([0.0, 0.0, step * act.repetitions])
    feet.step(k_up, t_end, t_end + 0.45, final, SIDES[k_up] * st.toe_out, 0.05)
    lift_w = (0.0, 0.45, t_end + 0.05, t_end + 0.55)

    def evaluate(t: np.ndarray) -> PoseParams:
        p = ctx.neutral(t)
        p.feet, p.foot_yaw, p.foot_pitch = feet.evaluate(t)
        w = ease(t, lift_w[0], lift_w[1]) * (1 - ease(t, lift_w[2], lift_w[3]))
        fwd = np.zeros_like(t)
        for t0, ta, tb in hops:
            u = np.clip((t - ta) / (tb - ta), 0.0, 1.0)
            p.root[:, 1] += (
                height * 4 * u * (1 - u)
                - 0.06 * bump(t, t0, ta + 0.05)
                - 0.06 * bump(t, tb - 0.05, tb + 0.25)
            )
            fwd += step * ease(t, ta, tb)
        p.root[:, 2] += fwd
        p.root[:, 0] += SIDES[k_st] * 0.75 * ctx.half_width * w
        p.pelvis_tilt[:, 1] += 0.05 * SIDES[k_st] * w
        # The free foot is tucked up behind, following the pelvis.
        lifted = np.stack([p.root[:, 0] + SIDES[k_up] * ctx.half_width * (1 - 0.75 * w),
                           geom.ankle_height + 0.3 * w, fwd - 0.18 * w + 0.02], -1)  # fmt: skip
        p.feet[:, k_up] = p.feet[:, k_up] * (1 - w[:, None]) + lifted * w[:, None]
        p.foot_pitch[:, k_up] = 0.4 * w
        for k in range(2):
            p.hands[:, k, 0] += SIDES[k] * 0.2 * w
        return p

    return total, evaluate


def _plan_kick(act: ActionSpec, ctx: Ctx) -> Plan:
    st = ctx.style
    k_kick = 0 if act.limb == "left" else 1
    k_st = 1 - k_kick
    height = {"low": 0.2, "normal": 0.5, "high": 0.8}[act.amplitude]
    period = 1.1 * _TEMPO[act.speed] * st.tempo
    starts = _rep_starts(ctx.rng, act.repetitions, period, st.jitter, 0.45)
    total = starts[-1] + 0.6

    def evaluate(t: np.ndarray) -> PoseParams:
        p = ctx.neutral(t)
        w = ease(t, 0.0, 0.4) * (1 - ease(t, total - 0.6, total - 0.1))
        p.root[:, 0] += SIDES[k_st] * 0.6 * ctx.half_width * w
        offset = np.zeros((len(t), 3))
        for i in range(act.repetitions):
            t0 = starts[i]
            d = starts[i + 1] - t0
            keys = [t0, t0 + 0.3 * d, t0 + 0.5 * d, t0 + 0.85 * d]
            vals = [[0, 0, 0], [0, 0.12, -0.22], [0, height, 0.35 + 0.45 * height], [0, 0, 0]]
            offset += keyframes(t, keys, vals)
            p.spine[:, 0] -= 0.25 * height * bump(t, t0 + 0.3 * d, t0 + 0.8 * d)
            p.hands[:, :, 0] += np.array(SIDES) * 0.15 * bump(t, t0, t0 + d)[:, None]
        p.feet[:, k_kick] += offset
        p.foot_pitch[:, k_kick] = -0.5 * np.clip(offset[:, 1] / max(height, 0.1), 0, 1)
        return p

    return total, evaluate


def _plan_squat(act: ActionSpec, ctx: Ctx) -> Plan:
    st, geom = ctx.style, ctx.geom
    depth = {"low": 0.18, "normal": 0.3, "high": 0.45}[act.amplitude] * (geom.thigh + geom.shin) / 0.83
    period = 1.8 * _TEMPO[act.speed] * st.tempo
    starts = _rep_starts(ctx.rng, act.repetitions, period, st.jitter, 0.2)
    total = starts[-1] + 0.3
    arms_forward = st.seed % 3 != 0

    def evaluate(t: np.ndarray) -> PoseParams:
        p = ctx.neutral(t)
        down = np.zeros_like(t)
        for i in range(act.repetitions):
            down += bump(t, starts[i], starts[i + 1] - 0.1)
        p.root[:, 1] -= depth * down
        p.root[:, 2] -= 0.45 * depth * down
        p.spine[:, 0] += 1.1 * depth * down
        if arms_forward:
            ang = 1.4 * down
            reach = geom.arm_reach * st.arm_bend
            p.hands[:, :, 1] = (-reach * np.cos(ang))[:, None]
            p.hands[:, :, 2] = (reach * np.sin(ang))[:, None]
        return p

    return total, evaluate


def _plan_turn(act: ActionSpec, ctx: Ctx) -> Plan:
    st = ctx.style
    sign = 1.0 if act.direction == "left" else -1.0
    angle = sign * {"low": 0.5 * np.pi, "normal": np.pi, "high": 2 * np.pi}[act.amplitude]
    dur = (0.7 + 0.45 * abs(angle)) * _TEMPO[act.speed] * st.tempo
    t0 = 0.15
    n_steps = max(2, int(np.ceil(abs(angle) / (np.pi / 3))))
    first = 0 if sign > 0 else 1
    feet = FootPlan(ctx.neutral_feet(), np.array([st.toe_out, -st.toe_out]))

    def yaw_at(t: np.ndarray | float) -> np.ndarray:
        return angle * ease(t, t0, t0 + dur)

    seg = dur / n_steps
    for i in range(n_steps + 1):
        k = (first + i) % 2
        a, b = t0 + i * seg, t0 + (i + 1) * seg
        if i == n_steps:
            a, b = t0 + dur - 0.1, t0 + dur + 0.25
        y = float(yaw_at(b))
        feet.step(k, a, b, ctx.neutral_feet(yaw=y)[k], y + SIDES[k] * st.toe_out, 0.05)
    total = t0 + dur + 0.4

    def evaluate(t: np.ndarray) -> PoseParams:
        p = ctx.neutral(t)
        p.yaw = yaw_at(t)
        p.feet, p.foot_yaw, p.foot_pitch = feet.evaluate(t)
        p.neck[:, 1] += 0.25 * sign * bump(t, t0 - 0.1, t0 + dur)
        return p

    return total, evaluate


def _sit_curves(ctx: Ctx, descent: float, hold: float) -> Plan:
    geom = ctx.geom
    drop = geom.stand_height - (geom.ankle_height + geom.shin + 0.02)
    back = 0.85 * geom.thigh
    t0 = 0.1
    total = t0 + descent + hold

    def evaluate(t: np.ndarray) -> PoseParams:
        p = ctx.neutral(t)
        w = ease(t, t0, t0 + descent)
        p.root[:, 1] -= drop * ease(t, t0 + 0.15 * descent, t0 + descent)
        p.root[:, 2] -= back * ease(t, t0, t0 + 0.9 * descent)
        p.spine[:, 0] += 0.55 * bump(t, t0, t0 + 1.2 * descent) - 0.08 * w
        hand = np.array([0.02, -0.5, 0.3])
        for k in range(2):
            rest = p.hands[:, k].copy()
            reach_fwd = np.array([SIDES[k] * 0.05, -0.2, 0.45])
            p.hands[:, k] = rest + (reach_fwd - rest) * bump(t, t0, t0 + descent)[:, None] * 0.6
            p.hands[:, k] = p.hands[:, k] * (1 - w[:, None]) + (hand * [SIDES[k], 1, 1]) * w[:, None]
            p.elbow_pole[:, k] = [SIDES[k] * 0.5, -0.2, -1.0]
        return p

    return total, evaluate


def _plan_sit_down(act: ActionSpec, ctx: Ctx) -> Plan:
    descent = 1.6 * _TEMPO[act.speed] * ctx.style.tempo
    return _sit_curves(ctx, descent, 1.0)


def _plan_stand_up(act: ActionSpec, ctx: Ctx) -> Plan:
    descent = 1.5 * _TEMPO[act.speed] * ctx.style.tempo
    total, sit = _sit_curves(ctx, descent, 0.6)
    return total, lambda t: sit(total - np.asarray(t, dtype=np.float64))


def _arm_lift(t: np.ndarray, t_up: float, t_down: float, ramp: float) -> np.ndarray:
    return window(t, t_up, t_down, ramp)


def _plan_wave(act: ActionSpec, ctx: Ctx) -> Plan:
    st = ctx.style
    arms = (0, 1) if act.limb == "both" else ((0,) if act.limb == "left" else (1,))
    period = 0.55 * _TEMPO[act.speed] * st.tempo
    up = 0.5 * st.tempo
    t0 = 0.1
    dur = up + act.repetitions * period + up
    pose = {"low": (0.22, -0.05, 0.3), "normal": (0.3, 0.22, 0.18), "high": (0.2, 0.5, 0.08)}[act.amplitude]
    total = t0 + dur + 0.1

    def evaluate(t: np.ndarray) -> PoseParams:
        p = ctx.neutral(t)
        w = _arm_lift(t, t0, t0 + dur, up)
        osc = np.sin(2 * np.pi * (t - t0 - up) / period) * ease(t, t0 + 0.5 * up, t0 + up)
        for k in arms:
            target = np.stack(
                [SIDES[k] * (pose[0] + 0.1 * osc), np.full_like(t, pose[1]), np.full_like(t, pose[2])], -1
            )
            p.hands[:, k] += (target - p.hands[:, k]) * w[:, None]
            p.elbow_pole[:, k] = [SIDES[k] * 1.0, -0.6, -0.3]
        return p

    return total, evaluate


def _plan_raise_arms(act: ActionSpec, ctx: Ctx) -> Plan:
    st, geom = ctx.style, ctx.geom
    arms = (0, 1) if act.limb == "both" else ((0,) if act.limb == "left" else (1,))
    period = 2.0 * _TEMPO[act.speed] * st.tempo
    starts = _rep_starts(ctx.rng, act.repetitions, period, st.jitter, 0.1)
    total = starts[-1] + 0.1
    top = {"up": 0.95 * np.pi, "forward": 0.5 * np.pi, "sideways": 0.5 * np.pi}[act.direction]
    reach = geom.arm_reach * 0.99

    def evaluate(t: np.ndarray) -> PoseParams:
        p = ctx.neutral(t)
        lift = np.zeros_like(t)
        for i in range(act.repetitions):
            a, b = starts[i], starts[i + 1] - 0.05
            lift += window(t, a, b, 0.4 * (b - a))
        ang = top * lift
        for k in arms:
            if act.direction == "sideways":
                target = np.stack(
                    [SIDES[k] * reach * np.sin(ang), -reach * np.cos(ang), np.full_like(t, 0.05)], -1
                )
                p.elbow_pole[:, k] = [0.0, 0.0, -1.0]
            else:
                target = np.stack(
                    [np.full_like(t, SIDES[k] * 0.08), -reach * np.cos(ang), reach * np.sin(ang)], -1
                )
                p.elbow_pole[:, k] = [SIDES[k] * 1.0, 0.0, -0.3]
            w = np.clip(lift * 3.0, 0.0, 1.0)[:, None]
            p.hands[:, k] = p.hands[:, k] * (1 - w) + target * w
        p.spine[:, 0] -= 0.06 * lift * (act.direction == "up")
        return p

    return total, evaluate


def _plan_punch(act: ActionSpec, ctx: Ctx) -> Plan:
    st, geom = ctx.style, ctx.geom
    period = 0.7 * _TEMPO[act.speed] * st.tempo
    guard_t = 0.5 * st.tempo
    t0 = 0.1
    starts = _rep_starts(ctx.rng, act.repetitions, period, st.jitter, t0 + guard_t)
    end = starts[-1]
    total = end + guard_t + 0.1
    if act.limb == "both":
        order = [(st.lead + i) % 2 for i in range(act.repetitions)]
    else:
        order = [0 if act.limb == "left" else 1] * act.repetitions
    used = sorted(set(order)) if act.limb != "both" else [0, 1]
    reach = geom.arm_reach

    def evaluate(t: np.ndarray) -> PoseParams:
        p = ctx.neutral(t)
        w = window(t, t0, end + guard_t, guard_t)
        ext = np.zeros((len(t), 2))
        for i, k in enumerate(order):
            d = starts[i + 1] - starts[i]
            ext[:, k] += keyframes(t, [starts[i], starts[i] + 0.25 * d, starts[i] + 0.7 * d], [0.0, 1.0, 0.0])
            p.spine[:, 2] += -SIDES[k] * 0.3 * bump(t, starts[i] - 0.05, starts[i] + 0.7 * d)
        for k in used:
            guard = np.array([-SIDES[k] * 0.08, -0.02, 0.24])
            hit = np.array([-SIDES[k] * 0.12, 0.02, reach])
            target = guard + (hit - guard) * ext[:, k : k + 1]
            p.hands[:, k] += (target - p.hands[:, k]) * w[:, None]
            p.elbow_pole[:, k] = [SIDES[k] * 0.6, -1.0, -0.2]
        return p

    return total, evaluate


def _plan_clap(act: ActionSpec, ctx: Ctx) -> Plan:
    st = ctx.style
    period = 0.5 * _TEMPO[act.speed] * st.tempo
    up = 0.45 * st.tempo
    t0 = 0.1
    starts = _rep_starts(ctx.rng, act.repetitions, period, st.jitter * 0.5, t0 + up)
    end = starts[-1]
    total = end + up + 0.1
    sx = ctx.shoulder_x

    def evaluate(t: np.ndarray) -> PoseParams:
        p = ctx.neutral(t)
        w = window(t, t0, end + up, up)
        gap = np.full_like(t, 0.32)
        for i in range(act.repetitions):
            gap -= 0.29 * bump(t, starts[i], starts[i + 1])
        for k in range(2):
            target = np.stack(
                [SIDES[k] * (-sx + 0.5 * gap), np.full_like(t, -0.12), np.full_like(t, 0.33)], -1
            )
            p.hands[:, k] += (target - p.hands[:, k]) * w[:, None]
            p.elbow_pole[:, k] = [SIDES[k] * 0.8, -1.0, -0.2]
        return p

    return total, evaluate


def _plan_throw(act: ActionSpec, ctx: Ctx) -> Plan:
    st, geom = ctx.style, ctx.geom
    k = 0 if act.limb == "left" else 1
    period = 1.5 * _TEMPO[act.speed] * st.tempo
    starts = _rep_starts(ctx.rng, act.repetitions, period, st.jitter, 0.1)
    total = starts[-1] + 0.2
    s = SIDES[k]
    keys_v = [[s * 0.03, -0.55, 0.04], [s * 0.15, 0.3, -0.3], [-s * 0.02, 0.15, geom.arm_reach],
              [-s * 0.25, -0.35, 0.4], [s * 0.03, -0.55, 0.04]]  # fmt: skip

    def evaluate(t: np.ndarray) -> PoseParams:
        p = ctx.neutral(t)
        arm = np.zeros((len(t), 3))
        active = np.zeros_like(t)
        for i in range(act.repetitions):
            a, d = starts[i], starts[i + 1] - starts[i]
            kt = [a, a + 0.4 * d, a + 0.55 * d, a + 0.7 * d, a + 0.95 * d]
            arm += keyframes(t, kt, keys_v) - np.array(keys_v[0])
            active += window(t, a, a + 0.95 * d, 0.1 * d)
            p.spine[:, 2] += s * 0.4 * bump(t, a, a + 0.5 * d) - s * 0.35 * bump(t, a + 0.4 * d, a + 0.9 * d)
            p.spine[:, 0] += 0.2 * bump(t, a + 0.4 * d, a + 0.9 * d)
        target = np.array(keys_v[0]) + arm
        w = np.clip(active, 0, 1)[:, None]
        p.hands[:, k] = p.hands[:, k] * (1 - w) + target * w
        p.elbow_pole[:, k] = [s * 1.0, -0.3, -0.5]
        return p

    return total, evaluate


def _plan_side_step(act: ActionSpec, ctx: Ctx) -> Plan:
    st = ctx.style
    lead = 0 if act.direction == "left" else 1
    trail = 1 - lead
    s = SIDES[lead]
    width = 0.32 * st.step
    period = 0.9 * _TEMPO[act.speed] * st.tempo
    starts = _rep_starts(ctx.rng, act.repetitions, period, st.jitter, 0.1)
    feet = FootPlan(ctx.neutral_feet(), np.array([st.toe_out, -st.toe_out]))
    for i in range(act.repetitions):
        a, d = starts[i], starts[i + 1] - starts[i]
        base = ctx.neutral_feet(x=s * width * (i + 1))
        feet.step(lead, a, a + 0.42 * d, base[lead], SIDES[lead] * st.toe_out, 0.06)
        feet.step(trail, a + 0.5 * d, a + 0.92 * d, base[trail], SIDES[trail] * st.toe_out, 0.05)
    total = starts[-1] + 0.2

    def evaluate(t: np.ndarray) -> PoseParams:
        p = ctx.neutral(t)
        p.feet, p.foot_yaw, p.foot_pitch = feet.evaluate(t)
        for i in range(act.repetitions):
            a, d = starts[i], starts[i + 1] - starts[i]
            p.root[:, 0] += s * width * ease(t, a + 0.1 * d, a + 0.85 * d)
            p.root[:, 1] -= 0.03 * bump(t, a, a + d)
        return p

    return total, evaluate


def _plan_jumping_jacks(act: ActionSpec, ctx: Ctx) -> Plan:
    st, geom = ctx.style, ctx.geom
    period = 1.05 * _TEMPO[act.speed] * st.tempo
    starts = _rep_starts(ctx.rng, act.repetitions, period, st.jitter * 0.5, 0.2)
    flight = _jump_flight(0.06)
    feet = FootPlan(ctx.neutral_feet(), np.array([st.toe_out, -st.toe_out]))
    hops = []
    for i in range(act.repetitions):
        a, d = starts[i], starts[i + 1] - starts[i]
        for ta, out in ((a + 0.05 * d, 1.0), (a + 0.55 * d, 0.0)):
            for k in range(2):
                pos = ctx.neutral_feet()[k] + np.array([SIDES[k] * 0.25 * out, 0.0, 0.0])
                feet.step(k, ta, ta + flight, pos, SIDES[k] * (st.toe_out + 0.2 * out), 0.08)
            hops.append(ta)
    total = starts[-1] + 0.3
    reach = geom.arm_reach * 0.98

    def evaluate(t: np.ndarray) -> PoseParams:
        p = ctx.neutral(t)
        p.feet, p.foot_yaw, p.foot_pitch = feet.evaluate(t)
        for ta in hops:
            u = np.clip((t - ta) / flight, 0.0, 1.0)
            p.root[:, 1] += 0.06 * 4 * u * (1 - u) - 0.05 * bump(t, ta + flight - 0.05, ta + flight + 0.25)
        up = np.zeros_like(t)
        for i in range(act.repetitions):
            a, d = starts[i], starts[i + 1] - starts[i]
            up += window(t, a, a + 0.95 * d, 0.4 * d)
        ang = 0.92 * np.pi * up
        for k in range(2):
            p.hands[:, k] = np.stack(
                [SIDES[k] * reach * np.sin(ang), -reach * np.cos(ang), np.full_like(t, 0.08)], -1
            )
            p.elbow_pole[:, k] = [0.0, 0.0, -1.0]
        return p

    return total, evaluate


def _plan_bend(act: ActionSpec, ctx: Ctx) -> Plan:
    st = ctx.style
    angle = {"low": 0.35, "normal": 0.8, "high": 1.3}[act.amplitude]
    period = 2.2 * _TEMPO[act.speed] * st.tempo
    starts = _rep_starts(ctx.rng, act.repetitions, period, st.jitter, 0.15)
    total = starts[-1] + 0.2

    def evaluate(t: np.ndarray) -> PoseParams:
        p = ctx.neutral(t)
        w = np.zeros_like(t)
        for i in range(act.repetitions):
            a, b = starts[i], starts[i + 1] - 0.05
            w += window(t, a, b, 0.35 * (b - a))
        p.pelvis_tilt[:, 0] += 0.45 * angle * w
        p.spine[:, 0] += 0.6 * angle * w
        p.root[:, 2] -= 0.12 * angle * w
        p.root[:, 1] -= 0.03 * angle * w
        p.neck[:, 0] -= 0.3 * angle * w
        return p

    return total, evaluate


_PLANNERS: dict[str, Callable[[ActionSpec, Ctx], Plan]] = {
    "walk": _plan_locomotion,
    "run": _plan_locomotion,
    "jump": _plan_jump,
    "hop": _plan_hop,
    "wave": _plan_wave,
    "kick": _plan_kick,
    "squat": _plan_squat,
    "turn": _plan_turn,
    "sit_down": _plan_sit_down,
    "stand_up": _plan_stand_up,
    "raise_arms": _plan_raise_arms,
    "punch": _plan_punch,
    "side_step": _plan_side_step,
    "jumping_jacks": _plan_jumping_jacks,
    "clap": _plan_clap,
    "bend": _plan_bend,
    "throw": _plan_throw,
}
assert set(_PLANNERS) == set(FAMILIES), set(FAMILIES) ^ set(_PLANNERS)


# ------------------------------------------------------------------------------------------------
# Composition
# ------------------------------------------------------------------------------------------------

_CHANNELS = (
    "root",
    "yaw",
    "pelvis_tilt",
    "spine",
    "neck",
    "feet",
    "foot_yaw",
    "foot_pitch",
    "hands",
    "elbow_pole",
)


def _empty_params(n: int) -> PoseParams:
    shapes = {"root": (3,), "yaw": (), "pelvis_tilt": (2,), "spine": (3,), "neck": (2,), "feet": (2, 3),
              "foot_yaw": (2,), "foot_pitch": (2,), "hands": (2, 3), "elbow_pole": (2, 3)}  # fmt: skip
    return PoseParams(**{c: np.zeros((n, *shapes[c])) for c in _CHANNELS})


def _to_world(p: PoseParams, yaw0: float, origin: np.ndarray) -> PoseParams:
    """Rotate a local-frame pose by yaw0 about +Y and move its XZ origin to ``origin`` (in place)."""
    c, s = math.cos(yaw0), math.sin(yaw0)

    def rot(v: np.ndarray) -> np.ndarray:
        x, z = v[..., 0].copy(), v[..., 2].copy()
        v[..., 0] = c * x + s * z + origin[0]
        v[..., 2] = -s * x + c * z + origin[1]
        return v

    rot(p.root)
    rot(p.feet)
    p.yaw = p.yaw + yaw0
    p.foot_yaw = p.foot_yaw + yaw0
    return p


@dataclass(frozen=True)
class Segment:
    """Where one action of the program sits in the rendered motion (seconds)."""

    action: int
    start: float
    end: float


@dataclass
class RenderResult:
    """Output of ``render_program_info``."""

    joints: np.ndarray
    """(T, J, 3) float32 joint positions in the dataset's skeleton and units."""
    fps: float
    segments: list[Segment]
    """Time span of each action (a simultaneous overlay spans part of its base)."""
    duration: float
    """Rendered length in seconds ((T - 1) / fps)."""


def _action_ctx(subject_geom: BodyGeometry, style: Style, index: int) -> Ctx:
    return Ctx(geom=subject_geom, style=style, rng=np.random.default_rng([style.seed, index, 104729]))


def _plan(act: ActionSpec, ctx: Ctx) -> Plan:
    total, fn = _PLANNERS[act.family](act, ctx)
    return total, fn


def _truncate(act: ActionSpec, plan: Plan) -> Plan:
    """Count-based actions with an explicit ``duration`` stop early (data-engine truncation)."""
    total, fn = plan
    if act.duration is not None and FAMILIES[act.family].kind != "locomotion":
        return min(total, float(act.duration)), fn
    return total, fn


def _evaluate_sequence(t: np.ndarray, plans: list[Plan], starts: list[float], ctx0: Ctx) -> PoseParams:
    out = ctx0.neutral(t)
    yaw0, origin = 0.0, np.zeros(2)
    prev_end: PoseParams | None = None
    for i, ((dur, fn), t_start) in enumerate(zip(plans, starts, strict=True)):
        first = fn(np.zeros(1))
        if prev_end is not None:
            yaw0 = float(prev_end.yaw[0] - first.yaw[0])
            c, s = math.cos(yaw0), math.sin(yaw0)
            fx, fz = first.root[0, 0], first.root[0, 2]
            origin = np.array(
                [prev_end.root[0, 0] - (c * fx + s * fz), prev_end.root[0, 2] - (-s * fx + c * fz)]
            )
        first = _to_world(first, yaw0, origin)
        last = i == len(plans) - 1
        # Frames between two actions (style pauses) hold the end pose of the earlier one.
        mask = np.ones(len(t), dtype=bool) if i == 0 else t >= t_start
        if not last:
            mask &= t < starts[i + 1]
        if mask.any():
            local = np.clip(t[mask] - t_start, 0.0, dur)
            seg = _to_world(fn(local), yaw0, origin)
            if prev_end is not None:
                fade = (1.0 - ease(t[mask] - t_start, 0.0, BLEND_SECONDS)).reshape(-1)
                for c_name in _CHANNELS:
                    delta = getattr(prev_end, c_name)[0] - getattr(first, c_name)[0]
                    val = getattr(seg, c_name)
                    setattr(seg, c_name, val + fade.reshape(-1, *([1] * (val.ndim - 1))) * delta)
            for c_name in _CHANNELS:
                getattr(out, c_name)[mask] = getattr(seg, c_name)
        prev_end = _to_world(fn(np.array([dur])), yaw0, origin)
    return out


@dataclass
class _Timeline:
    plans: list[Plan]
    """Sequence: one plan per action; simultaneous: [base, overlay]."""
    starts: list[float]
    segments: list[Segment]
    total: float
    """Natural length in seconds before clamping to [MIN_SECONDS, MAX_SECONDS]."""


def _timeline(program: MotionProgram, geom: BodyGeometry, style: Style) -> _Timeline:
    ctxs = [_action_ctx(geom, style, i) for i in range(len(program.actions))]
    pause0 = style.start_pause
    if program.relation == "simultaneous":
        base_act, over_act = program.actions
        over = _truncate(over_act, _plan(over_act, ctxs[1]))
        if base_act.spec.kind == "locomotion" and base_act.duration is not None:
            # A walking/running base lasts at least as long as its overlay (plus margins).
            longest = FAMILIES[base_act.family].attributes["duration"][1]
            need = min(over[0] + 1.0, longest)
            if base_act.duration < need:
                base_act = base_act.with_(duration=round(need, 2))
        base = _truncate(base_act, _plan(base_act, ctxs[0]))
        offset = 0.3 + 0.4 * style.gap
        starts = [pause0, pause0 + offset]
        segments = [Segment(0, starts[0], starts[0] + base[0]), Segment(1, starts[1], starts[1] + over[0])]
        return _Timeline([base, over], starts, segments, pause0 + max(base[0], offset + over[0] + 0.2))
    plans = [_truncate(a, _plan(a, c)) for a, c in zip(program.actions, ctxs, strict=True)]
    starts, cur = [], pause0
    for dur, _ in plans:
        starts.append(cur)
        cur += dur + style.gap
    segments = [Segment(i, s, s + d) for i, (s, (d, _)) in enumerate(zip(starts, plans, strict=True))]
    return _Timeline(plans, starts, segments, cur - style.gap)


NOMINAL_STYLE = Style(arm_swing=1.0, step=1.0, cadence=1.0, tempo=1.0, jitter=0.0, lean=0.04, roll=0.0,
                      head_pitch=0.05, stance=1.0, toe_out=0.1, arm_bend=0.92, arm_out=0.04, lead=0,
                      start_pause=0.175, gap=0.15, sway=0.0, seed=0)  # fmt: skip
"""Median style, used to estimate a program's length before a style is drawn."""


def program_duration(
    program: MotionProgram, subject: Subject | None = None, style_seed: int | None = None
) -> float:
    """Natural length (seconds, before clamping) of ``program``; nominal subject/style when omitted."""
    geom = BodyGeometry.from_subject(subject or Subject())
    style = NOMINAL_STYLE if style_seed is None else Style.from_seed(style_seed)
    return _timeline(program, geom, style).total


def render_program_info(
    program: MotionProgram, subject: Subject, style_seed: int, dataset: str = "humanml3d"
) -> RenderResult:
    """Render ``program`` for ``subject`` with style ``style_seed`` (deterministic).

    Returns joints in the dataset's skeleton (HumanML3D 22 joints in metres, KIT-ML 21 joints in
    millimetres), sampled at the dataset fps, between ``MIN_SECONDS`` and ``MAX_SECONDS`` long
    (shorter programs hold the final pose; longer ones are cut).
    """
    spec = get_dataset_spec(dataset)
    if not isinstance(program, MotionProgram):
        raise TypeError(f"render_program: program must be a MotionProgram, got {type(program).__name__}")
    if not isinstance(subject, Subject):
        raise TypeError(f"render_program: subject must be a Subject, got {type(subject).__name__}")
    geom = BodyGeometry.from_subject(subject)
    style = Style.from_seed(style_seed)
    tl = _timeline(program, geom, style)
    total_len = float(np.clip(tl.total, MIN_SECONDS, MAX_SECONDS))
    n = int(round(total_len * spec.fps)) + 1
    t = np.arange(n) / spec.fps
    ctx0 = _action_ctx(geom, style, 0)
    if program.relation == "simultaneous":
        params = _evaluate_sequence(t, tl.plans[:1], tl.starts[:1], ctx0)
        over_total, over_fn = tl.plans[1]
        t0 = tl.starts[1]
        over = over_fn(np.clip(t - t0, 0.0, over_total))
        w = window(t, t0, t0 + over_total, 0.3)[:, None]
        for k in _overlay_arms(program.actions[1]):
            params.hands[:, k] = params.hands[:, k] * (1 - w) + over.hands[:, k] * w
            params.elbow_pole[:, k] = params.elbow_pole[:, k] * (1 - w) + over.elbow_pole[:, k] * w
    else:
        params = _evaluate_sequence(t, tl.plans, tl.starts, ctx0)
    joints = solve_pose(params, geom)
    segments = [
        Segment(s.action, round(min(s.start, total_len), 4), round(min(s.end, total_len), 4))
        for s in tl.segments
    ]
    out = to_dataset_skeleton(joints, spec).astype(np.float32)
    return RenderResult(joints=out, fps=spec.fps, segments=segments, duration=(n - 1) / spec.fps)


def _overlay_arms(act: ActionSpec) -> tuple[int, ...]:
    if act.limb in ("left", "right"):
        return (0,) if act.limb == "left" else (1,)
    return (0, 1)


def render_program(
    program: MotionProgram, subject: Subject, style_seed: int, dataset: str = "humanml3d"
) -> np.ndarray:
    """``(T, J, 3)`` float32 joints of ``program`` (see ``render_program_info``)."""
    return render_program_info(program, subject, style_seed, dataset).joints
