"""Atomic checkpoints with a verified manifest, and finding the latest good one.

A checkpoint is two files in ``<run_dir>/checkpoints/``:

* ``step-00001200.pt``: the ``torch.save``'d state, written to a temporary file, fsync'd and
  renamed into place, so a crash never leaves a truncated file under the final name;
* ``step-00001200.json``: its manifest (step, size, SHA-256), written the same way *after* the
  state file. A state file without a manifest was never finished.

Loading walks the manifests from the newest, verifies size and digest, and falls back to the
previous checkpoint (with a warning naming the broken one) when a file is corrupt.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch

__all__ = ["CheckpointError", "find_checkpoints", "load_latest", "save_checkpoint"]

_NAME = re.compile(r"^step-(\d{8,})\.json$")


class CheckpointError(RuntimeError):
    """No usable checkpoint could be loaded."""


class _HashingWriter:
    """A write-only file wrapper that hashes what passes through it."""

    def __init__(self, handle: IO[bytes]) -> None:
        self.handle = handle
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.size += len(data)
        return self.handle.write(data)

    def flush(self) -> None:
        self.handle.flush()


def _fsync_dir(directory: Path) -> None:
    # The rename itself must reach the disk, not only the file's contents.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_dir(path.parent)


def save_checkpoint(directory: Path, step: int, state: dict[str, Any], *, keep: int = 3) -> Path:
    """Write ``state`` atomically as the checkpoint of ``step``; keep the newest ``keep``.

    Returns:
        The path of the state file.
    """
    directory.mkdir(parents=True, exist_ok=True)
    stem = f"step-{step:08d}"
    state_path = directory / f"{stem}.pt"
    info: dict[str, Any] = {}

    def write_state(handle: IO[bytes]) -> None:
        writer = _HashingWriter(handle)
        torch.save(state, writer)  # type: ignore[arg-type]
        info.update(size=writer.size, sha256=writer.digest.hexdigest())

    _atomic_write(state_path, write_state)
    manifest = {"step": step, "file": state_path.name, **info}

    def write_manifest(handle: IO[bytes]) -> None:
        handle.write(json.dumps(manifest, indent=1).encode())

    _atomic_write(directory / f"{stem}.json", write_manifest)
    for old in find_checkpoints(directory)[keep:]:
        old.unlink(missing_ok=True)
        old.with_suffix(".pt").unlink(missing_ok=True)
    return state_path


def find_checkpoints(directory: Path) -> list[Path]:
    """Manifest paths in ``directory``, newest step first."""
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.match(p.name))]
    return [path for _, path in sorted(found, reverse=True)]


def _verify(manifest_path: Path) -> tuple[Path, dict[str, Any]]:
    try:
        manifest = json.loads(manifest_path.read_text())
        state_path = manifest_path.with_name(manifest["file"])
        int(manifest["size"]), str(manifest["sha256"])
    except (ValueError, KeyError, TypeError) as error:  # cut short, edited, or not ours
        raise CheckpointError(
            f"its manifest {manifest_path.name} is not a valid manifest ({error!r}); expected "
            "JSON with 'file', 'size' and 'sha256'"
        ) from None
    if not state_path.exists():
        raise CheckpointError(f"{state_path.name} is missing")
    size = state_path.stat().st_size
    if size != manifest["size"]:
        raise CheckpointError(f"{state_path.name} has {size} bytes, expected {manifest['size']}")
    digest = hashlib.sha256()
    with open(state_path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != manifest["sha256"]:
        raise CheckpointError(f"{state_path.name} does not match its SHA-256 digest")
    return state_path, manifest


def load_latest(
    directory: Path, map_location: torch.device | str | None = None
) -> tuple[dict[str, Any], Path]:
    """Load the newest checkpoint that verifies; warn about each broken one skipped.

    Raises:
        FileNotFoundError: ``directory`` holds no checkpoint at all.
        CheckpointError: Every checkpoint in it is broken.
    """
    manifests = find_checkpoints(directory)
    if not manifests:
        raise FileNotFoundError(
            f"resume=True but there is no checkpoint in {directory}; train once without "
            "resume (with checkpoint_every= or until the end) or check `run_dir`"
        )
    problems = []
    for manifest_path in manifests:
        try:
            state_path, _ = _verify(manifest_path)
            state = torch.load(state_path, map_location=map_location, weights_only=True)
        except Exception as error:
            problems.append(f"{manifest_path.stem}: {error}")
            warnings.warn(
                f"checkpoint {manifest_path.stem} in {directory} is corrupt ({error}); "
                "falling back to the previous one",
                RuntimeWarning,
                stacklevel=2,
            )
            continue
        return state, state_path
    raise CheckpointError(f"no usable checkpoint in {directory}: " + "; ".join(problems))
