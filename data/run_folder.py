"""Owned run folders: a manifest, a lock, atomic writes, validated resumes and provenance hashes.

Every command that writes into an output folder opens it once::

    with RunFolder.open(out, command="prepare.train_vq", config=cfg_dict, inputs={"mean": mean_path}) as run:
        if run.finished:                       # same command, same config, already done
            return ...
        run.save_npy("meta/mean.npy", mean)    # atomic; recorded with its sha256
        run.save_torch("net_last.pth", state)
        run.write_with("codes.npy", lambda fh: np.save(fh, codes))  # any writer(fh)
        log_path = run.path("metrics.jsonl")   # for code that writes the file itself (hashed at close)
        run.record("from_library.bin")         # a file written by code outside the run
        run.done()

Folder layout (besides the command's own files)::

    run.json     the manifest (:data:`MANIFEST`): format, command, run_id, status, config, config_hash,
                 volatile (config keys left out of the hash), inputs ({name: {path, digest}}),
                 git_commit, created/updated/finished, attempts (one per invocation that wrote:
                 started, ended, pid, host, status, error; ``interrupted`` if it was killed),
                 files ({relative path: {sha256, size, mtime_ns}}), stale (files of a superseded
                 attempt, removed by ``done()`` unless rewritten) and info (free-form).
    .run.lock    the lock (:data:`LOCK`) while a process holds the folder: pid, host, command.

``status`` is ``running`` while a process writes (it stays ``running`` if that process was
killed), ``failed`` after an exception, ``stopped`` when the block ended without ``done()`` (e.g. a
training run that stopped after ``max_steps``) and ``done`` after ``done()``.

Rules (each refusal raises :class:`RunFolderError` naming the folder, the other run and the fix):

- **Owned.** A folder that holds another command's run, or files but no manifest, is refused unless
  ``overwrite=True``. Even then only the files this command writes are replaced; nothing this run
  did not create is ever deleted.
- **Validated resume.** With ``resume=True`` a run whose config (minus ``volatile`` keys) or input
  fingerprints differ from the folder's run is refused, naming the differing keys. ``resume=False``
  restarts the command's own run: its earlier files are overwritten, and those not rewritten are
  removed by ``done()`` (only if unchanged since they were recorded).
- **One process.** The lock file is created with ``O_CREAT | O_EXCL``; a second process fails at
  once. A lock left by a dead process on the same host is taken over with a warning.
- **Check, then write.** ``open`` only creates the lock (and the folder, if missing) while it
  checks; the manifest and the ``start_files`` (e.g. ``config.yaml``) are written at the first
  write. A run refused, or failing before its first write, leaves the folder as it was.
- **Atomic.** Every file goes through :func:`atomic_write` (temporary file in the same folder,
  fsync, ``os.replace``), so an interrupted run leaves no half-written file; temporaries of a
  killed attempt carry the run id and are removed when the run is opened again.

Adopting it in an entry point (``prepare/train_vq.py`` and ``data/synth/build.py`` are the examples):
validate cheap inputs, then ``with data.runtime.open_run(cfg.output_dir, command=..., config=...,
seed=..., inputs=..., volatile=..., overwrite=cfg.overwrite, resume=cfg.resume) as run:``; return the
stored result when ``run.finished``; pass ``run`` to the library code, which writes through it
(``OutputFolder`` is the manifest-free stand-in when a library is used without a run); call
``run.begin()`` before worker processes write files and ``run.record(rel)`` for each file they wrote;
``run.done()`` at the end. ``volatile`` lists the keys that may change between invocations of one
run (output_dir, resume, overwrite, max_steps, device, threads, progress).

Only the main process (rank 0) writes: with ``main_process=False`` ``open`` neither checks nor
locks, and every write is a no-op that returns the target path.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import secrets
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

logger = logging.getLogger(__name__)

MANIFEST = "run.json"
"""Manifest file name inside a run folder."""
LOCK = ".run.lock"
"""Lock file name inside a run folder."""
MANIFEST_FORMAT = "run-folder/1"
TEMP_SUFFIX = ".partial"
DIR_CONTENT_LIMIT = 64 << 20
"""Directories up to this many bytes are fingerprinted by content, larger ones by listing + sizes."""
_CHUNK = 1 << 20
_META_NAMES = (MANIFEST, LOCK)

DEFAULT_FIXES = {
    "overwrite": "pass overwrite=true",
    "restart": "pass resume=false",
    "out": "choose another output_dir",
}
"""How a refusal names its fixes; a CLI passes its own flags (``--overwrite``, ``--force``, ``--out``)."""


class RunFolderError(FileExistsError):
    """A run folder cannot be used as asked (other command, foreign files, other config, locked)."""


class ProvenanceError(ValueError):
    """An artefact was built from something other than what it is used with."""


# ----------------------------------------------------------------------------------------------
# Hashes and fingerprints
# ----------------------------------------------------------------------------------------------


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's content, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _is_temporary(name: str) -> bool:
    return name.startswith(".") and name.endswith(TEMP_SUFFIX)


def _dir_files(root: Path) -> list[tuple[str, Path]]:
    """(posix relative path, path) of the regular files under ``root``, sorted; run metadata excluded."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in filenames:
            if name in _META_NAMES or _is_temporary(name):
                continue
            p = Path(dirpath) / name
            if p.is_file():
                out.append((p.relative_to(root).as_posix(), p))
    return sorted(out)


def path_digest(path: str | Path, content_limit: int = DIR_CONTENT_LIMIT) -> str:
    """Fingerprint of a file or directory, prefixed by how it was taken.

    - file: ``sha256:<hex>`` of the content;
    - directory of at most ``content_limit`` bytes: ``dir-sha256:<hex>`` over the sorted lines
      ``relative path, size, sha256`` of its files;
    - larger directory: ``dir-list:<hex>`` over the lines ``relative path, size`` (stat only, so a
      dataset of 30k motions takes well under a second; a same-size edit goes unnoticed).

    Run metadata (:data:`MANIFEST`, :data:`LOCK`) and temporaries are left out.

    Raises:
        FileNotFoundError: ``path`` does not exist.
    """
    path = Path(path)
    if path.is_file():
        return "sha256:" + file_sha256(path)
    if not path.is_dir():
        raise FileNotFoundError(f"cannot fingerprint {path}: no such file or directory")
    files = [(rel, p, p.stat().st_size) for rel, p in _dir_files(path)]
    h = hashlib.sha256()
    if sum(size for _, _, size in files) <= content_limit:
        for rel, p, size in files:
            h.update(f"{rel}\0{size}\0{file_sha256(p)}\n".encode())
        return "dir-sha256:" + h.hexdigest()
    for rel, _, size in files:
        h.update(f"{rel}\0{size}\n".encode())
    return "dir-list:" + h.hexdigest()


def files_digest(files: Iterable[tuple[str, str | Path]]) -> str:
    """``files-sha256:<hex>`` over the given ``(key, path)`` files in order: what a command reads.

    For inputs that are a chosen subset of a folder other commands add to (e.g. the caption files of
    the split ids in a dataset root that the data engine extends): fingerprinting the whole folder
    would refuse every rerun after such an addition. An absent file counts as ``<absent>``.
    """
    h = hashlib.sha256()
    for key, path in files:
        path = Path(path)
        data = path.read_bytes() if path.is_file() else b"<absent>"
        h.update(f"{key}\0{path.name}\0{len(data)}\0".encode() + hashlib.sha256(data).digest())
    return "files-sha256:" + h.hexdigest()


def fingerprint(paths: Mapping[str, str | Path] | Iterable[str | Path]) -> dict[str, str]:
    """``{name: path_digest(path)}``; a plain iterable of paths is keyed by ``str(path)``."""
    items = paths.items() if isinstance(paths, Mapping) else ((str(p), p) for p in paths)
    return {name: path_digest(p) for name, p in items}


def config_hash(config: Mapping[str, Any], volatile: Iterable[str] = ()) -> str:
    """sha256 of the canonical JSON of ``config`` without the ``volatile`` (dotted) keys."""
    canon = json.dumps(_without(config, set(volatile)), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canon.encode()).hexdigest()


def _without(config: Mapping[str, Any], volatile: set[str], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in config.items():
        key = f"{prefix}{k}"
        if key in volatile:
            continue
        out[k] = _without(v, volatile, key + ".") if isinstance(v, Mapping) else v
    return out


def _flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in config.items():
        if isinstance(v, Mapping) and v:
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_diff(
    old: Mapping[str, Any], new: Mapping[str, Any], volatile: Iterable[str] = ()
) -> list[tuple[str, Any, Any]]:
    """``(dotted key, old value, new value)`` for every key that differs, volatile keys left out."""
    vol = set(volatile)
    a = _flatten(json.loads(json.dumps(_without(old, vol), default=str)))
    b = _flatten(json.loads(json.dumps(_without(new, vol), default=str)))
    absent = "<absent>"
    return [
        (k, a.get(k, absent), b.get(k, absent))
        for k in sorted(set(a) | set(b))
        if a.get(k, absent) != b.get(k, absent)
    ]


@dataclass
class Provenance:
    """What an artefact was built from: ``{name: digest}`` (see :func:`path_digest`).

    Written beside the artefact (``save``) and checked by its users (``check``).
    """

    hashes: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, paths: Mapping[str, str | Path]) -> Provenance:
        """Fingerprint the given inputs now."""
        return cls(fingerprint(paths))

    def save(self, path: str | Path) -> str:
        """Write ``{"provenance": hashes}`` atomically; returns the file's sha256."""
        return atomic_write_json(path, {"provenance": self.hashes})

    @classmethod
    def load(cls, path: str | Path) -> Provenance:
        """Read a file written by :meth:`save`.

        Raises:
            ProvenanceError: the file is missing or has no ``provenance`` table.
        """
        path = Path(path)
        if not path.is_file():
            raise ProvenanceError(f"provenance file not found: {path}; rebuild the artefact beside it")
        data = json.loads(path.read_text())
        if not isinstance(data, dict) or not isinstance(data.get("provenance"), dict):
            raise ProvenanceError(f"{path}: no 'provenance' table; rebuild the artefact beside it")
        return cls(dict(data["provenance"]))

    def check(self, actual: Mapping[str, str] | Provenance, what: str = "artefact") -> None:
        """:func:`check_provenance` of these recorded hashes against ``actual``."""
        check_provenance(self.hashes, actual.hashes if isinstance(actual, Provenance) else actual, what=what)


def check_provenance(recorded: Mapping[str, str], actual: Mapping[str, str], what: str = "artefact") -> None:
    """Check that every name in ``actual`` has the digest ``recorded`` for it.

    Args:
        recorded: ``{name: digest}`` stored with the artefact when it was built.
        actual: ``{name: digest}`` of what it is used with now (e.g. :func:`fingerprint`).
        what: the artefact, for the message (e.g. ``"code files in runs/vq/codes"``).

    Raises:
        ProvenanceError: a name is missing from ``recorded`` or its digest differs; the message
            lists each name with both digests.
    """
    problems = []
    for name in sorted(actual):
        if name not in recorded:
            problems.append(f"{name}: not recorded (recorded: {sorted(recorded)})")
        elif recorded[name] != actual[name]:
            problems.append(f"{name}: built from {recorded[name]}, used with {actual[name]}")
    if problems:
        raise ProvenanceError(
            f"{what} was built from other inputs than the ones given: " + "; ".join(problems)
            + ". Rebuild it from these inputs, or pass the inputs it was built from"
        )  # fmt: skip


# ----------------------------------------------------------------------------------------------
# Atomic writes
# ----------------------------------------------------------------------------------------------


class _HashingFile(io.RawIOBase):
    """Write-only file wrapper that feeds every byte written to a sha256."""

    def __init__(self, fh: IO[bytes]):
        self._fh = fh
        self.sha = hashlib.sha256()

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:  # type: ignore[override]
        mv = memoryview(b).cast("B")
        self.sha.update(mv)
        return self._fh.write(mv)

    def flush(self) -> None:
        self._fh.flush()


def atomic_write(
    path: str | Path, writer: Callable[[IO[bytes]], Any], *, tag: str = "", durable: bool = True
) -> str:
    """Write ``path`` through ``writer(fh)`` into a temporary file, fsync, then ``os.replace``.

    The temporary file ``.<name>.<tag><random>.partial`` sits in the target's folder (created if
    missing). If ``writer`` raises (or the process is interrupted) the target keeps its earlier
    content; on an exception the temporary file is removed. ``fh`` is write-only and not seekable.

    ``durable=False`` skips the fsync (about 4 ms a file on a typical disk): a killed process still
    leaves no half-written file, but an OS crash may leave the renamed file empty or short. Use it
    for many small files whose size and sha256 a manifest records, so that such a file is detected
    and rewritten (motion and code files); keep the default for checkpoints and manifests.

    Returns:
        Hex sha256 of the bytes written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{tag}{secrets.token_hex(4)}{TEMP_SUFFIX}"
    try:
        with open(tmp, "xb") as raw:
            fh = _HashingFile(raw)
            writer(fh)  # type: ignore[arg-type]
            raw.flush()
            if durable:
                os.fsync(raw.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return fh.sha.hexdigest()


def atomic_write_bytes(path: str | Path, data: bytes, *, tag: str = "", durable: bool = True) -> str:
    return atomic_write(path, lambda fh: fh.write(data), tag=tag, durable=durable)


def atomic_write_text(path: str | Path, text: str, *, tag: str = "") -> str:
    return atomic_write_bytes(path, text.encode("utf-8"), tag=tag)


def atomic_write_json(path: str | Path, obj: Any, *, indent: int | None = 2, tag: str = "") -> str:
    return atomic_write_text(path, json.dumps(obj, indent=indent) + "\n", tag=tag)


def atomic_save_npy(path: str | Path, array: np.ndarray, *, tag: str = "") -> str:
    """``np.save`` atomically (``path`` is used as given; no ``.npy`` is appended)."""
    return atomic_write(path, lambda fh: np.save(fh, np.asarray(array), allow_pickle=False), tag=tag)


def atomic_torch_save(obj: Any, path: str | Path, *, tag: str = "") -> str:
    """``torch.save(obj)`` atomically."""
    # torch is imported here so that data-only commands (data.synth workers) do not load it.
    import torch

    return atomic_write(path, lambda fh: torch.save(obj, fh), tag=tag)


# ----------------------------------------------------------------------------------------------
# Folders
# ----------------------------------------------------------------------------------------------


def git_commit() -> str:
    """Current git commit of this repository, or ``unknown``."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parent,
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def read_manifest(folder: str | Path) -> dict[str, Any] | None:
    """The folder's :data:`MANIFEST`, or ``None`` when there is none.

    Raises:
        RunFolderError: the manifest exists but is not a readable run manifest.
    """
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RunFolderError(
            f"{path}: unreadable run manifest ({err}); the folder's run cannot be identified. "
            "Choose another output folder, or delete the manifest if you know what the folder holds"
        ) from err
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT or "command" not in data:
        raise RunFolderError(
            f"{path}: not a run manifest of format {MANIFEST_FORMAT}; choose another output folder"
        )
    return data


class OutputFolder:
    """Atomic, rank-aware writes under ``root``, without a manifest (see :class:`RunFolder`).

    Used where a library writes files and no run is open (e.g. a trainer built in a test).
    Every writer returns the target path; on processes other than the main one it writes nothing.
    """

    def __init__(self, root: str | Path, *, main_process: bool = True):
        self.root = Path(root)
        self.main_process = main_process
        self._tag = ""

    # subclasses hook in here
    def _before_write(self) -> None:
        pass

    def _after_write(self, rel: str, sha256: str) -> None:
        pass

    def _target(self, rel: str | Path) -> Path:
        rel_path = Path(rel)
        if rel_path.is_absolute() or ".." in rel_path.parts:
            raise ValueError(f"{self.root}: {rel!s} is not a path inside the output folder")
        return self.root / rel_path

    def write_with(
        self, rel: str | Path, writer: Callable[[IO[bytes]], Any], *, durable: bool = True
    ) -> Path:
        """Write ``rel`` atomically through ``writer(fh)`` (see :func:`atomic_write`)."""
        target = self._target(rel)
        if not self.main_process:
            return target
        self._before_write()
        sha = atomic_write(target, writer, tag=self._tag, durable=durable)
        self._after_write(Path(rel).as_posix(), sha)
        return target

    def write_bytes(self, rel: str | Path, data: bytes, *, durable: bool = True) -> Path:
        return self.write_with(rel, lambda fh: fh.write(data), durable=durable)

    def write_text(self, rel: str | Path, text: str) -> Path:
        return self.write_bytes(rel, text.encode("utf-8"))

    def write_json(self, rel: str | Path, obj: Any, indent: int | None = 2) -> Path:
        return self.write_text(rel, json.dumps(obj, indent=indent) + "\n")

    def save_npy(self, rel: str | Path, array: np.ndarray) -> Path:
        return self.write_with(rel, lambda fh: np.save(fh, np.asarray(array), allow_pickle=False))

    def save_torch(self, rel: str | Path, obj: Any) -> Path:
        import torch  # see atomic_torch_save

        return self.write_with(rel, lambda fh: torch.save(obj, fh))

    def path(self, rel: str | Path) -> Path:
        """Target path for code that writes ``rel`` itself (its parent folder is created)."""
        target = self._target(rel)
        if self.main_process:
            self._before_write()
            target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def record(self, rel: str | Path, sha256: str | None = None) -> None:
        """Note that ``rel`` was written (by :meth:`path`'s user); no-op here."""

    def begin(self) -> None:
        """Start the run now (manifest, start files), e.g. before worker processes write into the folder."""
        if self.main_process:
            self._before_write()


class RunFolder(OutputFolder):
    """An output folder owned by one command's run; open it with :meth:`open` in a ``with`` block.

    Attributes:
        previous_status: status of the run found in the folder (``None`` for a new run).
        resumed: the folder's run is continued (same command, config and inputs; ``resume=True``).
        finished: ``resumed`` and the run was ``done``: the command may skip its work.
        manifest: the manifest as it will be written.
    """

    def __init__(self, root: Path, *, main_process: bool = True):
        super().__init__(root, main_process=main_process)
        self.manifest: dict[str, Any] = {}
        self.previous_status: str | None = None
        self.resumed = False
        self.start_files: dict[str, bytes] = {}
        self.flush_seconds = 5.0
        self._pending: set[str] = set()
        self._begun = False
        self._done = False
        self._closed = False
        self._locked = False
        self._created_dirs: list[Path] = []
        self._last_flush = 0.0

    @property
    def finished(self) -> bool:
        return self.resumed and self.previous_status == "done"

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(
        cls,
        output_dir: str | Path,
        *,
        command: str,
        config: Mapping[str, Any],
        inputs: Mapping[str, str | Path | Mapping[str, str]] | None = None,
        volatile: Iterable[str] = (),
        overwrite: bool = False,
        resume: bool = True,
        start_files: Mapping[str, bytes | str] | None = None,
        info: Mapping[str, Any] | None = None,
        main_process: bool = True,
        fixes: Mapping[str, str] | None = None,
    ) -> RunFolder:
        """Check ``output_dir`` for this run and lock it; nothing else is written yet.

        Args:
            output_dir: the run folder (created if missing).
            command: the module that owns the folder, e.g. ``"prepare.train_vq"``.
            config: the resolved config (JSON-able); hashed without the ``volatile`` keys.
            inputs: ``{name: path}`` fingerprinted with :func:`path_digest` and compared on resume;
                a value may also be ``{"path": ..., "digest": ...}`` fingerprinted by the caller
                (e.g. over selected files of a folder that other commands add files to).
            volatile: dotted config keys that may change between invocations of one run
                (``max_steps``, ``device``, ``progress``, ``output_dir`` ...).
            overwrite: accept a folder holding another command's run, files without a manifest,
                or a run with another config; only files this run writes are replaced.
            resume: continue the folder's run of this command; ``False`` restarts it.
            start_files: ``{relative path: content}`` written (atomically) at the first write,
                e.g. the resolved ``config.yaml``.
            info: free-form JSON-able facts stored in the manifest (e.g. the seed).
            main_process: ``False`` on other ranks: no checks, no lock, no writes.
            fixes: how the refusal messages name the fixes (see :data:`DEFAULT_FIXES`).

        Raises:
            RunFolderError: the folder cannot be used (see the module docstring); nothing in it
                was changed.
            FileNotFoundError: an input does not exist.
        """
        run = cls(Path(output_dir), main_process=main_process)
        cfg = json.loads(json.dumps(dict(config), default=str))
        vol = sorted(set(volatile))
        digests = {
            name: {"path": str(p["path"]), "digest": str(p["digest"])}
            if isinstance(p, Mapping)
            else {"path": str(p), "digest": path_digest(p)}
            for name, p in (inputs or {}).items()
        }
        run.start_files = {
            k: v.encode("utf-8") if isinstance(v, str) else bytes(v) for k, v in (start_files or {}).items()
        }
        fresh = {
            "format": MANIFEST_FORMAT, "command": command, "run_id": secrets.token_hex(6), "status": "new",
            "config_hash": config_hash(cfg, vol), "volatile": vol, "config": cfg, "inputs": digests,
            "git_commit": git_commit(), "created": _now(), "updated": _now(), "finished": None,
            "attempts": [], "files": {}, "stale": {}, "info": dict(info or {}),
        }  # fmt: skip
        if not main_process:
            # Read-only view so that every rank takes the same branch on ``finished``; rank 0 checks.
            run.manifest = fresh
            old = read_manifest(run.root) if run.root.is_dir() else None
            if old is not None and old["command"] == command and resume and not run._differences(old, fresh):
                run.resumed, run.previous_status = True, old.get("status")
                run.manifest = dict(old)
            return run
        run._create_root()
        try:
            run._acquire_lock(command)
            run._decide(fresh, overwrite=overwrite, resume=resume, fixes={**DEFAULT_FIXES, **(fixes or {})})
        except BaseException:
            run._release()
            raise
        return run

    def _create_root(self) -> None:
        if self.root.exists() and not self.root.is_dir():
            raise RunFolderError(f"{self.root} exists and is not a folder; choose another output folder")
        missing = []
        p = self.root
        while not p.exists():
            missing.append(p)  # deepest first
            p = p.parent
        self.root.mkdir(parents=True, exist_ok=True)
        self._created_dirs = missing

    def _lock_path(self) -> Path:
        return self.root / LOCK

    def _acquire_lock(self, command: str) -> None:
        lock = self._lock_path()
        me = {"pid": os.getpid(), "host": socket.gethostname(), "command": command, "since": _now()}
        for _ in range(2):
            try:
                fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._read_lock(lock)
                if holder is None:  # vanished between the two calls
                    continue
                if not self._stale(holder):
                    raise RunFolderError(
                        f"{self.root} is locked by {holder.get('command', '?')} (pid {holder.get('pid')} on "
                        f"{holder.get('host')}, since {holder.get('since')}): two runs must not write one "
                        f"folder. Wait for it to finish, choose another output folder, or delete {lock} if "
                        "that process is gone"
                    ) from None
                logger.warning(
                    "%s: taking over the lock of %s (pid %s on %s), which is no longer running",
                    self.root, holder.get("command"), holder.get("pid"), holder.get("host"),
                )  # fmt: skip
                # Another process may have taken it over just now; remove it only if unchanged.
                if self._read_lock(lock) == holder:
                    lock.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as fh:
                json.dump(me, fh)
            self._locked = True
            return
        raise RunFolderError(f"{self.root}: could not take the lock {lock}; another process is taking it")

    @staticmethod
    def _read_lock(lock: Path) -> dict[str, Any] | None:
        try:
            text = lock.read_text()
        except FileNotFoundError:
            return None
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            # Written by os.open + json.dump: a holder killed in between leaves it empty.
            return {"pid": None, "host": socket.gethostname(), "raw": text}
        return data if isinstance(data, dict) else {"pid": None, "host": None, "raw": text}

    @staticmethod
    def _stale(holder: dict[str, Any]) -> bool:
        """The lock's process is known to be gone (same host, pid not alive)."""
        if holder.get("host") != socket.gethostname():
            return False
        pid = holder.get("pid")
        if not isinstance(pid, int):
            return True
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False

    def _decide(
        self, fresh: dict[str, Any], *, overwrite: bool, resume: bool, fixes: Mapping[str, str]
    ) -> None:
        old = read_manifest(self.root)
        command = fresh["command"]
        if old is None:
            foreign = self._foreign_files()
            if foreign and not overwrite:
                shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
                raise RunFolderError(
                    f"{self.root} holds files that {command} did not write ({shown}) and no {MANIFEST}. "
                    f"To write into it anyway {fixes['overwrite']} (only the files {command} writes are "
                    f"replaced, nothing else is deleted); otherwise {fixes['out']}"
                )
            if foreign:
                logger.warning(
                    "%s: writing beside %d files of unknown origin (overwrite)", self.root, len(foreign)
                )
            self.manifest = fresh
            return
        self.previous_status = old.get("status")
        if old["command"] != command:
            if not overwrite:
                raise RunFolderError(
                    f"{self.root} holds a {old['command']} run (status {old.get('status')}, created "
                    f"{old.get('created')}), not a {command} run; {fixes['out']}, or {fixes['overwrite']} "
                    f"to write {command}'s files beside it (its files are not deleted)"
                )
            logger.warning("%s: replacing the manifest of a %s run (overwrite)", self.root, old["command"])
            self.manifest = fresh
            return
        diffs = self._differences(old, fresh)
        if resume and diffs and not overwrite:
            shown = "; ".join(diffs[:8]) + (f"; and {len(diffs) - 8} more" if len(diffs) > 8 else "")
            raise RunFolderError(
                f"{self.root} holds a {command} run (status {old.get('status')}) with another config or "
                f"inputs: {shown}. Resuming would mix the two; {fixes['out']}, or {fixes['restart']} to "
                f"start this run over (its files are replaced)"
            )
        self._remove_own_temporaries(old["run_id"])
        manifest = dict(fresh, run_id=old["run_id"], created=old.get("created", fresh["created"]))
        manifest["attempts"] = [dict(a) for a in old.get("attempts", [])]
        if manifest["attempts"] and "status" not in manifest["attempts"][-1]:
            manifest["attempts"][-1]["status"] = "interrupted"  # killed: it never reached close()
        manifest["stale"] = dict(old.get("stale", {}))
        if resume and not diffs:
            self.resumed = True
            manifest["files"] = dict(old.get("files", {}))
            manifest["status"] = old.get("status")
            manifest["finished"] = old.get("finished")
            manifest["info"] = {**old.get("info", {}), **fresh["info"]}
        else:
            manifest["stale"].update(old.get("files", {}))
            logger.info(
                "%s: starting the %s run over (%s)", self.root, command, "; ".join(diffs) or "resume=false"
            )
        self.manifest = manifest
        self._tag = manifest["run_id"] + "-"

    @staticmethod
    def _differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
        vol = sorted(set(old.get("volatile", [])) | set(new["volatile"]))
        out = [
            f"{k} was {_show(a)} and is {_show(b)} now"
            for k, a, b in config_diff(old["config"], new["config"], vol)
        ]
        old_in, new_in = old.get("inputs", {}), new["inputs"]
        for name in sorted(set(old_in) | set(new_in)):
            a = old_in.get(name, {}).get("digest", "<absent>")
            b = new_in.get(name, {}).get("digest", "<absent>")
            if a != b:
                where = new_in.get(name, old_in.get(name, {})).get("path")
                out.append(f"input {name} ({where}) was {a} and is {b} now")
        return out

    def _foreign_files(self) -> list[str]:
        return [rel for rel, _ in _dir_files(self.root)] + [
            Path(d, n).relative_to(self.root).as_posix()
            for d, _, names in os.walk(self.root)
            for n in names
            if _is_temporary(n)
        ]

    def _remove_own_temporaries(self, run_id: str) -> None:
        pattern = re.compile(rf"^\..*\.{re.escape(run_id)}-[0-9a-f]{{8}}{re.escape(TEMP_SUFFIX)}$")
        for dirpath, _, names in os.walk(self.root):
            for name in names:
                if pattern.match(name):
                    logger.warning(
                        "%s: removing a temporary file of an interrupted write", Path(dirpath) / name
                    )
                    (Path(dirpath) / name).unlink(missing_ok=True)

    # ------------------------------------------------------------------ writing
    def _before_write(self) -> None:
        if self._closed:
            raise RuntimeError(f"{self.root}: the run is closed; write inside its 'with' block")
        if self._begun:
            return
        self._begun = True
        m = self.manifest
        m["status"] = "running"
        m["finished"] = None
        m["attempts"].append(
            {
                "started": _now(),
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "git_commit": m["git_commit"],
            }
        )
        self._tag = m["run_id"] + "-"
        self.flush()
        for rel, data in self.start_files.items():
            sha = atomic_write_bytes(self._target(rel), data, tag=self._tag)
            self._after_write(rel, sha)
        self.flush()

    def _after_write(self, rel: str, sha256: str) -> None:
        st = (self.root / rel).stat()
        self.manifest["files"][rel] = {"sha256": sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
        self.manifest["stale"].pop(rel, None)
        self._pending.discard(rel)
        # Small manifests are rewritten after every file; large ones (a dataset's thousands of
        # files) every few seconds, so a killed run loses at most those seconds of records.
        if len(self.manifest["files"]) <= 256 or time.monotonic() - self._last_flush > self.flush_seconds:
            self.flush()

    def path(self, rel: str | Path) -> Path:
        target = super().path(rel)
        if self.main_process:
            self._pending.add(Path(rel).as_posix())
        return target

    def record(self, rel: str | Path, sha256: str | None = None) -> None:
        """Record ``rel`` (written by code outside this class) with its sha256 (computed if not given)."""
        if not self.main_process:
            return
        self._before_write()
        target = self._target(rel)
        if not target.is_file():
            raise FileNotFoundError(f"{self.root}: cannot record {rel}: no such file")
        self._after_write(Path(rel).as_posix(), sha256 or file_sha256(target))

    def has(self, rel: str | Path) -> bool:
        """``rel`` is recorded and still has its recorded size."""
        entry = self.manifest.get("files", {}).get(Path(rel).as_posix())
        target = self._target(rel)
        return entry is not None and target.is_file() and target.stat().st_size == entry["size"]

    def read_json(self, rel: str | Path) -> Any:
        """The JSON in recorded file ``rel``, read without beginning an attempt (unlike :meth:`path`).

        The way to return a finished run's result: a kept run's folder stays byte for byte as it was.

        Raises:
            FileNotFoundError: ``rel`` is not recorded in this run or changed size since it was written.
        """
        if not self.has(rel):
            raise FileNotFoundError(
                f"{self.root}: {rel} is not a recorded file of this run (or changed since)"
            )
        return json.loads(self._target(rel).read_text())

    def missing_files(self) -> list[str]:
        """Recorded files that are gone or changed size since they were written."""
        return sorted(rel for rel in self.manifest.get("files", {}) if not self.has(rel))

    def flush(self) -> None:
        """Write the manifest now (atomically); done automatically every few seconds of writes."""
        if not self.main_process or not self._begun:
            return
        self.manifest["updated"] = _now()
        atomic_write_json(self.root / MANIFEST, self.manifest, indent=1, tag=self._tag)
        self._last_flush = time.monotonic()

    def done(self) -> None:
        """Mark the run finished and remove the files of a superseded attempt that were not rewritten."""
        if not self.main_process:
            return
        self._before_write()
        self._record_pending()
        for rel, entry in sorted(self.manifest["stale"].items()):
            target = self.root / rel
            if not target.is_file():
                continue
            st = target.stat()
            same = st.st_size == entry["size"] and (
                st.st_mtime_ns == entry.get("mtime_ns") or file_sha256(target) == entry["sha256"]
            )
            if same:
                target.unlink()
            else:
                logger.warning(
                    "%s: %s was written by an earlier attempt and changed since; kept", self.root, rel
                )
        self.manifest["stale"] = {}
        self.manifest["status"] = "done"
        self.manifest["finished"] = _now()
        self._done = True
        self.flush()

    def _record_pending(self) -> None:
        for rel in sorted(self._pending):
            if (self.root / rel).is_file():
                self._after_write(rel, file_sha256(self.root / rel))

    # ------------------------------------------------------------------ closing
    def __enter__(self) -> RunFolder:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(exc)

    def close(self, exc: BaseException | None = None) -> None:
        """Set the final status (``failed`` with ``exc``, else ``done``/``stopped``) and unlock."""
        if self._closed:
            return
        try:
            if self.main_process and self._begun:
                self._record_pending()
                status = "failed" if exc is not None else ("done" if self._done else "stopped")
                self.manifest["status"] = status
                attempt = self.manifest["attempts"][-1]
                attempt.update(ended=_now(), status=status)
                if exc is not None:
                    attempt["error"] = f"{type(exc).__name__}: {exc}"[:2000]
                self.flush()
        finally:
            self._closed = True
            self._release()

    def _release(self) -> None:
        if self._locked:
            self._lock_path().unlink(missing_ok=True)
            self._locked = False
        if not self._begun:
            for d in self._created_dirs:  # deepest first; only if still empty
                try:
                    d.rmdir()
                except OSError:
                    break


class FolderLock:
    """A folder's :data:`LOCK` held without a run, e.g. while a command adds files beside another
    command's run (the data engine's imperfect motions in a dataset root). Same rules as a run's lock.

    Raises:
        RunFolderError: a live process holds the lock.
    """

    def __init__(self, folder: str | Path, command: str):
        self._holder = RunFolder(Path(folder))
        self._holder._create_root()  # removed again on release if it was created and stayed empty
        try:
            self._holder._acquire_lock(command)
        except BaseException:
            self._holder._release()
            raise

    def release(self) -> None:
        self._holder._release()


def _show(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 80 else text[:77] + "..."
