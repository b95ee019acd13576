"""Who rendered the imperfect motions in a dataset root: ``<root>/engine_motions.json``.

The data engine renders its imperfect motions into a motion root (the dataset root by default) as
ordinary motion files under ids ``900000...``. Several engine runs (other output folders, seeds,
``max_goals``) may point at one root, so every motion there records what it is and who uses it::

    engine_motions.json   format, runs {run_id: {output_dir, seed, config_hash, updated,
                          superseded}}, motions {id: {job, goal, rung, runs [run ids],
                          files {relative path: {sha256, size, mtime_ns}} or null}}
    engine_motions.txt    the ids of ``motions``, one a line (a split list: ``splits=[engine_motions]``)

``job`` is the sha256 of everything the motion's four files are a function of (:func:`job_digest`:
the id, the perturbed program, subject, style seed, dataset, the engine record and
:data:`RENDER_VERSION`), so two runs that would write the same bytes under an id share it, whatever
their seeds or output folders, and a run that would write other bytes does not take it silently.
``files`` is ``null`` while the motion is claimed but not (completely) written: a run killed while
rendering leaves such records, and the next run renders them again (each file is written
atomically, so no half-written file survives; temporaries of killed writers are removed).

Rules, checked by :meth:`EngineMotions.plan` before anything is written (the root's
``.run.lock`` is held from :meth:`EngineMotions.open` to ``close``, so two runs on one root, or an
engine run and ``data.synth``, do not interleave):

- same ``job``, files intact (size and mtime, else sha256): reused, not rendered again;
- same ``job``, files missing, changed or never completed: rendered again;
- another ``job`` used by another engine run whose output folder still holds that run: refused
  (:class:`EngineMotionsError`, naming both runs and the fixes: ``imperfect_root`` or
  ``imperfect_id_start``, or ``overwrite=true`` which re-renders them and marks the other run
  ``superseded``); used only by this run (``force=true`` restart) or by runs whose output folder is
  gone: rendered again;
- an id with files but no record (a real motion, or an engine motion of an earlier version listed
  only in ``engine_motions.txt``): refused; the engine never writes over files it did not record,
  except legacy-listed engine motions with ``overwrite=true``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data.layout import DatasetPaths
from data.run_folder import (
    TEMP_SUFFIX,
    FolderLock,
    RunFolderError,
    atomic_write_json,
    atomic_write_text,
    file_sha256,
    read_manifest,
)
from data.synth.writer import motion_files

logger = logging.getLogger(__name__)

ENGINE_LIST = "engine_motions.txt"
"""Ids of the engine motions of a root, one a line (readable as a split)."""
ENGINE_MANIFEST = "engine_motions.json"
"""The ownership manifest of a root's engine motions."""
FORMAT = "engine-motions/1"
RENDER_VERSION = 1
"""Bump when rendering or writing changes the bytes of a motion: every job digest changes with it."""
COMMAND = "data.engine"

_TEMP_RE = re.compile(rf"^\.(?P<id>[^.]+)\.(npy|txt|json)\..*{re.escape(TEMP_SUFFIX)}$")


class EngineMotionsError(RunFolderError):
    """An engine run would write over imperfect motions it does not own (or files of another origin)."""


def job_digest(job: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of what one motion's files are a function of (+ :data:`RENDER_VERSION`)."""
    canon = json.dumps({"render_version": RENDER_VERSION, **job}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canon.encode()).hexdigest()


@dataclass(frozen=True)
class EngineRun:
    """One engine run, as the root's manifest names it."""

    run_id: str
    output_dir: str
    seed: int
    config_hash: str

    def describe(self) -> str:
        return f"run {self.run_id} (output_dir {self.output_dir}, seed {self.seed}, config {self.config_hash[:12]})"


@dataclass
class Plan:
    """What a run does with its imperfect ids (see the module docstring)."""

    render: list[str] = field(default_factory=list)
    """Ids to render (new, incomplete, changed, or taken over)."""
    reuse: list[str] = field(default_factory=list)
    """Ids whose recorded files are this run's motion already."""
    taken_over: dict[str, list[str]] = field(default_factory=dict)
    """Other run id -> its ids re-rendered with ``overwrite=true``."""
    released: list[str] = field(default_factory=list)
    """Ids of dead runs (output folder gone) rendered anew."""


class EngineMotions:
    """The engine motions of one root; open with :meth:`open` in a ``with`` block (holds the root's lock)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.data: dict[str, Any] = {"format": FORMAT, "runs": {}, "motions": {}}
        self.legacy: set[str] = set()
        self.flush_seconds = 5.0
        self._lock: FolderLock | None = None
        self._last_flush = 0.0
        self._dirty = False
        self._tag = ""

    # ------------------------------------------------------------------ reading
    @classmethod
    def read(cls, root: str | Path) -> EngineMotions:
        """The root's manifest without the lock (read-only use)."""
        em = cls(root)
        path = em.root / ENGINE_MANIFEST
        if path.is_file():
            try:
                data = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError) as err:
                raise EngineMotionsError(
                    f"{path}: unreadable ({err}); the owners of the engine motions in {em.root} cannot be "
                    "told. Render into another root (imperfect_root=DIR), or delete the file if no "
                    "annotation files use those motions"
                ) from err
            if not isinstance(data, dict) or data.get("format") != FORMAT:
                raise EngineMotionsError(f"{path}: not an {FORMAT} manifest; render into another root")
            em.data = data
        listed = em.root / ENGINE_LIST
        if listed.is_file():
            em.legacy = set(listed.read_text().split()) - set(em.data["motions"])
        return em

    @classmethod
    def open(cls, root: str | Path, run: EngineRun) -> EngineMotions:
        """Lock ``root`` (its ``.run.lock``; created if missing) and read the manifest; ``run`` tags temporaries."""
        lock = FolderLock(root, COMMAND)
        try:
            em = cls.read(root)
        except BaseException:
            lock.release()
            raise
        em._lock = lock
        em._tag = f"{run.run_id}-"
        return em

    def __enter__(self) -> EngineMotions:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Write pending records and release the lock."""
        try:
            if self._dirty:
                self.flush()
        finally:
            if self._lock is not None:
                self._lock.release()
                self._lock = None

    @property
    def motions(self) -> dict[str, dict[str, Any]]:
        return self.data["motions"]

    def intact(self, mid: str, expect: Mapping[str, str] | None = None) -> bool:
        """The motion's four files are recorded and unchanged (and have the ``expect`` sha256s, if given)."""
        files = self.motions.get(mid, {}).get("files")
        if not files or sorted(files) != sorted(motion_files(mid)):
            return False
        for rel, entry in files.items():
            if expect is not None and expect.get(rel) != entry["sha256"]:
                return False
            p = self.root / rel
            if not p.is_file():
                return False
            st = p.stat()
            if st.st_size != entry["size"]:
                return False
            if st.st_mtime_ns != entry["mtime_ns"] and file_sha256(p) != entry["sha256"]:
                return False
        return True

    def _live(self, run_id: str) -> bool:
        """The run's output folder still holds that engine run (an unreadable manifest counts as live)."""
        info = self.data["runs"].get(run_id)
        if info is None:
            return False
        try:
            m = read_manifest(info["output_dir"]) if Path(info["output_dir"]).is_dir() else None
        except RunFolderError:
            return True
        return m is not None and m.get("command") == COMMAND and m.get("run_id") == run_id

    def _has_files(self, mid: str) -> list[str]:
        return [rel for rel in motion_files(mid) if (self.root / rel).exists()]

    # ------------------------------------------------------------------ planning
    def plan(self, me: EngineRun, jobs: Mapping[str, str], *, overwrite: bool) -> Plan:
        """Decide, per id of ``jobs`` (id -> job digest), to render or reuse; raises before any write.

        Raises:
            EngineMotionsError: ids held by another live engine run with another job (fix:
                ``imperfect_root``/``imperfect_id_start``, or ``overwrite=true``), listed by an
                engine of an earlier version (fix: ``overwrite=true``), or with files of unknown
                origin (fix: ``imperfect_id_start`` or ``imperfect_root``).
        """
        plan = Plan()
        foreign, legacy = [], []
        conflicts: dict[str, list[str]] = {}
        for mid, job in jobs.items():
            entry = self.motions.get(mid)
            if entry is None:
                if mid in self.legacy:
                    legacy.append(mid)
                    plan.render.append(mid)
                elif self._has_files(mid):
                    foreign.append(mid)
                else:
                    plan.render.append(mid)
                continue
            if entry["job"] == job:
                (plan.reuse if self.intact(mid) else plan.render).append(mid)
                continue
            others = [r for r in entry["runs"] if r != me.run_id]
            live = [r for r in others if self._live(r)]
            for r in live:
                conflicts.setdefault(r, []).append(mid)
                plan.taken_over.setdefault(r, []).append(mid)
            if others and not live:
                plan.released.append(mid)
            plan.render.append(mid)
        if foreign:
            raise EngineMotionsError(
                f"imperfect id range {min(jobs)}..{max(jobs)} collides with existing motions "
                f"{_show_ids(foreign)} in {self.root} (not written by the engine: no record in "
                f"{ENGINE_MANIFEST}); set imperfect_id_start={self.first_free_id(jobs)} or "
                "imperfect_root=DIR. The engine never writes over files it did not create"
            )
        if legacy and not overwrite:
            raise EngineMotionsError(
                f"{self.root} holds engine motions {_show_ids(legacy)} listed in {ENGINE_LIST} by an "
                f"engine of an earlier version (no record in {ENGINE_MANIFEST}, so the annotation files "
                f"that use them cannot be told); {me.describe()} would render other motions under these "
                f"ids. Pass overwrite=true to re-render them, or render beside them with "
                f"imperfect_id_start={self.first_free_id(jobs)} or into another root with imperfect_root=DIR"
            )
        if conflicts and not overwrite:
            owners = "; ".join(
                f"{self._describe(r)} uses {len(ids)} of them ({_show_ids(ids)})"
                for r, ids in sorted(conflicts.items())
            )
            raise EngineMotionsError(
                f"{self.root} holds imperfect motions rendered by another engine run with another config, "
                f"under the ids this run needs: {owners}. This {me.describe()} would render different "
                f"motions under those ids, so the other run's annotation files would no longer match "
                f"their motions. Render this run's motions into another root (imperfect_root=DIR, or "
                f"a copy of the dataset root) or beside them (imperfect_id_start="
                f"{self.first_free_id(jobs)}); or pass overwrite=true to re-render them (only engine "
                f"motion files are rewritten; the other run is marked superseded and refuses to reuse "
                f"its output until rerun)"
            )
        return plan

    def first_free_id(self, jobs: Mapping[str, str]) -> str:
        """The first id above every recorded, listed and requested id (a suggestion for ``imperfect_id_start``)."""
        ids = [int(m) for m in (*self.motions, *self.legacy, *jobs) if m.isdigit()]
        vec_dir = DatasetPaths(self.root).vecs_dir
        if vec_dir.is_dir():
            lo = min(int(m) for m in jobs) if jobs else 0
            ids += [int(p.stem) for p in vec_dir.glob("*.npy") if p.stem.isdigit() and int(p.stem) >= lo]
        return str(max(ids, default=0) + 1)

    def _describe(self, run_id: str) -> str:
        info = self.data["runs"].get(run_id, {})
        return EngineRun(
            run_id, info.get("output_dir", "?"), info.get("seed", -1), info.get("config_hash", "?")
        ).describe()

    # ------------------------------------------------------------------ writing
    def claim(self, me: EngineRun, jobs: Mapping[str, dict[str, Any]], plan: Plan) -> None:
        """Record ``me`` as the user of its ids (``jobs``: id -> {job, goal, rung}) and write the manifest.

        Ids to render get ``files: null`` until :meth:`record`; ``me`` stops using any id it no
        longer needs; runs whose ids are taken over are marked ``superseded``.
        """
        for entry in self.motions.values():
            if me.run_id in entry["runs"]:
                entry["runs"].remove(me.run_id)
        render = set(plan.render)
        for mid, job in jobs.items():
            old = self.motions.get(mid)
            if mid not in render:
                old["runs"].append(me.run_id)
            elif old is not None and old["job"] == job["job"]:  # same bytes: users keep it
                self.motions[mid] = {**job, "runs": [*old["runs"], me.run_id], "files": None}
            else:
                self.motions[mid] = {**job, "runs": [me.run_id], "files": None}
        self.legacy -= set(jobs)
        for other, ids in plan.taken_over.items():
            self.data["runs"][other]["superseded"] = self.data["runs"][other].get("superseded", 0) + len(ids)
            logger.warning(
                "%s: re-rendering %d imperfect motions of %s (overwrite=true); that run no longer matches them",
                self.root, len(ids), self._describe(other),
            )  # fmt: skip
        used = {r for e in self.motions.values() for r in e["runs"]}
        # a run is listed while it uses motions, or once superseded (so that it can be named)
        self.data["runs"] = {
            r: info for r, info in self.data["runs"].items() if r in used or info.get("superseded")
        }
        self.data["runs"][me.run_id] = {
            "output_dir": me.output_dir, "seed": me.seed, "config_hash": me.config_hash,
            "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "superseded": 0,
        }  # fmt: skip
        self.flush()

    def record(self, mid: str, sha256: Mapping[str, str]) -> None:
        """Record the files of ``mid`` just written (sha256 from the writer, size/mtime from stat)."""
        files = {}
        for rel in motion_files(mid):
            st = (self.root / rel).stat()
            files[rel] = {"sha256": sha256[rel], "size": st.st_size, "mtime_ns": st.st_mtime_ns}
        self.motions[mid]["files"] = files
        self._dirty = True
        if time.monotonic() - self._last_flush > self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        """Write ``engine_motions.json`` and ``engine_motions.txt`` atomically."""
        ids = sorted(set(self.motions) | self.legacy)
        atomic_write_json(self.root / ENGINE_MANIFEST, self.data, indent=1, tag=self._tag)
        atomic_write_text(self.root / ENGINE_LIST, "".join(m + "\n" for m in ids), tag=self._tag)
        self._dirty = False
        self._last_flush = time.monotonic()

    def remove_temporaries(self) -> int:
        """Remove temporaries of killed writers of engine motions (under the lock no writer is alive)."""
        ids = set(self.motions) | self.legacy
        paths = DatasetPaths(self.root)
        removed = 0
        for folder in (paths.vecs_dir, paths.joints_dir, paths.texts_dir, paths.attributes_dir):
            if not folder.is_dir():
                continue
            for p in folder.iterdir():
                m = _TEMP_RE.match(p.name)
                if m and m.group("id") in ids:
                    logger.warning("%s: removing a temporary file of an interrupted write", p)
                    p.unlink(missing_ok=True)
                    removed += 1
        return removed


def _show_ids(ids: Iterable[str]) -> str:
    ids = sorted(ids)
    if len(ids) > 3 and all(i.isdigit() for i in ids) and int(ids[-1]) - int(ids[0]) == len(ids) - 1:
        return f"{ids[0]}..{ids[-1]}"
    return ", ".join(ids[:5]) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")
