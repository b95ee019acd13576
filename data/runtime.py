"""Run-time helpers shared by every entry script: seeding, ranks, logging, run folders."""

from __future__ import annotations

import json
import logging
import os
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from data.run_folder import MANIFEST, OutputFolder, RunFolder, RunFolderError, git_commit, read_manifest

logger = logging.getLogger(__name__)


def dist_env() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from the torchrun environment; (0, 1, 0) otherwise."""
    rank = int(os.environ.get("RANK", 0))
    world = int(os.environ.get("WORLD_SIZE", 1))
    local = int(os.environ.get("LOCAL_RANK", 0))
    return rank, world, local


def is_main_process() -> bool:
    return dist_env()[0] == 0


def set_seed(seed: int, *, per_rank: bool = False, deterministic: bool = False) -> int:
    """Seed python, numpy and torch (and CUDA). With ``per_rank`` the seed is ``seed + rank``.

    Returns the seed actually used.
    """
    import torch

    if per_rank:
        seed = seed + dist_env()[0]
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    return seed


def setup_logging(level: int = logging.INFO) -> None:
    """Configure root logging once; ranks other than 0 only emit warnings."""
    rank = dist_env()[0]
    logging.basicConfig(
        level=level if rank == 0 else logging.WARNING,
        format=f"%(asctime)s [rank{rank}] %(levelname)s %(name)s: %(message)s"
        if dist_env()[1] > 1
        else "%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


def _config_yaml(config: dict[str, Any]) -> str:
    return yaml.safe_dump(config, sort_keys=False)


def _run_info(seed: int) -> str:
    info = {"seed": seed, "git_commit": git_commit(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    return json.dumps(info, indent=2)


def prepare_run_dir(output_dir: str | Path, config: dict[str, Any], seed: int) -> Path:
    """Create ``output_dir`` and write the resolved ``config.yaml`` and ``run_info.json`` (rank 0).

    For commands not yet on :func:`open_run`: the two files are written atomically, and a folder
    that holds a managed run (a ``run.json``, see :mod:`data.run_folder`) is refused.

    Raises:
        RunFolderError: ``output_dir`` holds another command's managed run.
    """
    out = Path(output_dir)
    if is_main_process():
        manifest = read_manifest(out) if out.is_dir() else None
        if manifest is not None:
            raise RunFolderError(
                f"{out} holds a {manifest['command']} run (see {out / MANIFEST}); writing this command's "
                "config.yaml and outputs there would replace its files. Choose another output_dir"
            )
        folder = OutputFolder(out)
        folder.write_text("config.yaml", _config_yaml(config))
        folder.write_text("run_info.json", _run_info(seed))
    return out


def open_run(
    output_dir: str | Path,
    *,
    command: str,
    config: dict[str, Any],
    seed: int,
    inputs: dict[str, str | Path] | None = None,
    volatile: tuple[str, ...] = (),
    overwrite: bool = False,
    resume: bool = True,
    fixes: dict[str, str] | None = None,
) -> RunFolder:
    """Open ``output_dir`` as ``command``'s run folder (use in a ``with`` block; see :mod:`data.run_folder`).

    Checks the folder (owner, config minus ``volatile`` keys, input fingerprints, lock) before
    anything is written; at the first write the manifest, the resolved ``config.yaml`` and
    ``run_info.json`` (seed, git commit, start time) are written. Only rank 0 checks and writes.

    Raises:
        RunFolderError: the folder holds another command's run or foreign files (fix:
            ``overwrite=true``), a run with another config or inputs (fix: ``resume=false`` or
            another ``output_dir``), or is locked by a live process. ``fixes`` renames those
            fixes in the message (e.g. ``{"restart": "pass force=true"}``, see
            ``data.run_folder.DEFAULT_FIXES``).
    """
    return RunFolder.open(
        output_dir,
        command=command,
        config=config,
        inputs=inputs,
        volatile=volatile,
        overwrite=overwrite,
        resume=resume,
        start_files={"config.yaml": _config_yaml(config), "run_info.json": _run_info(seed)},
        info={"seed": seed},
        main_process=is_main_process(),
        fixes=fixes,
    )


class MetricsLogger:
    """Append-only JSON-lines metrics file (rank 0 writes; others are no-ops)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.enabled = is_main_process()
        if self.enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def log(self, **values: Any) -> None:
        if self.enabled:
            with self.path.open("a") as fh:
                fh.write(json.dumps(values, default=float) + "\n")


def resolve_device(name: str, local_rank: int | None = None):
    """Map a config ``device`` string to a ``torch.device``.

    ``auto`` -> ``cuda:<local_rank>`` when CUDA is available, else ``cpu``; ``cuda`` -> the local
    rank's GPU; other names go to ``torch.device`` unchanged. ``local_rank`` defaults to the
    torchrun ``LOCAL_RANK``.

    Raises:
        ValueError: a CUDA device is asked for but CUDA is not available.
    """
    import torch

    if local_rank is None:
        local_rank = dist_env()[2]
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(f"cuda:{local_rank}") if name == "cuda" else torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={name!r} but CUDA is not available; use device=cpu or auto")
    return device


def set_torch_threads(num_threads: int) -> None:
    """``torch.set_num_threads(num_threads)`` for a config's ``num_threads``; 0 keeps torch's default."""
    if num_threads > 0:
        import torch

        torch.set_num_threads(num_threads)


# ----------------------------------------------------------------------------------------------
# Process group: rank/world and gathering for work shared by ranks (no-ops in one process)
# ----------------------------------------------------------------------------------------------
# torch is imported inside these functions, as in set_seed above: the synth and engine CLIs import
# this module and must not pay for (or require) torch.


def dist_initialized() -> bool:
    """True inside an initialised ``torch.distributed`` default process group."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def init_distributed(device: Any) -> bool:
    """Start the default process group for a ``torchrun`` launch (``WORLD_SIZE > 1``), if not started.

    Backend ``nccl`` for a CUDA ``device`` (made the current device first), ``gloo`` on CPU.
    Returns True when this call started the group, so the caller ends it with
    ``destroy_distributed()``; False in one process or when the group already exists.
    """
    if dist_env()[1] <= 1 or dist_initialized():
        return False
    import torch

    if device.type == "cuda":
        torch.cuda.set_device(device)
    torch.distributed.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return True


def destroy_distributed() -> None:
    """End the default process group, if one is running."""
    if dist_initialized():
        import torch.distributed as dist

        dist.destroy_process_group()


def group_rank_world() -> tuple[int, int]:
    """``(rank, world_size)`` of the initialised default process group; ``(0, 1)`` without one.

    Use this, not ``dist_env()``, to share work that is gathered afterwards: under ``torchrun``
    before ``init_process_group`` (or when a script never calls it) the environment names several
    ranks, yet no collective can run, so each process must do all the work itself.
    """
    if not dist_initialized():
        return 0, 1
    import torch.distributed as dist

    return dist.get_rank(), dist.get_world_size()


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's picklable ``obj`` in rank order (``[obj]`` without a process group).

    A collective: every rank of the group must call it.
    """
    if not dist_initialized():
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def gather_dicts(mine: dict[Any, Any]) -> dict[Any, Any]:
    """Union of every rank's ``{work unit: result}`` dict (a collective; the ranks hold disjoint keys).

    Raises:
        ValueError: two ranks returned the same key (work was duplicated, not shared).
    """
    merged: dict[Any, Any] = {}
    for rank, part in enumerate(all_gather_objects(mine)):
        clash = merged.keys() & part.keys()
        if clash:
            raise ValueError(
                f"gather_dicts: rank {rank} repeats work unit(s) {list(clash)[:5]} of a lower rank"
            )
        merged.update(part)
    return merged
