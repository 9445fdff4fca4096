"""Under ``torch.distributed``: start the process group torchrun asked for, shard the data."""

from __future__ import annotations

import atexit
import os
import warnings
from collections.abc import Iterable
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler, IterableDataset, RandomSampler

from multiloss.training.distributed import DistContext

__all__ = ["init_distributed", "shard", "shutdown_distributed"]

_STARTED_HERE = [False]


def init_distributed(device: torch.device | None = None) -> DistContext:
    """Start the default process group from torchrun's environment, if it asks for one.

    Does nothing when a group already exists or when the environment names no world
    (``WORLD_SIZE`` unset or 1). The backend is NCCL for CUDA devices, gloo otherwise.

    Returns:
        The resulting context (a single process when there is no group).
    """
    if dist.is_available() and not dist.is_initialized():
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world > 1:
            cuda = device.type == "cuda" if device is not None else torch.cuda.is_available()
            dist.init_process_group(backend="nccl" if cuda else "gloo")
            _STARTED_HERE[0] = True
            # We started it, so we end it: a process that exits with the group alive can abort
            # in the communication threads' teardown ("terminate called without an active
            # exception"). shutdown_distributed() does it properly; this is the fallback.
            atexit.register(_destroy)
    return DistContext.detect()


def shutdown_distributed() -> None:
    """End the process group that :func:`init_distributed` started (if it started one).

    Every rank waits at a barrier first, so no rank tears down its side while another is still
    finishing (writing a report or a checkpoint). Groups started by the user are left alone.
    """
    if _STARTED_HERE[0] and dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
        _STARTED_HERE[0] = False


def _destroy() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def shard(data: Iterable[Any], context: DistContext, *, shuffle_default: bool = True) -> Any:
    """A ``DataLoader`` over a map-style dataset gets a ``DistributedSampler``; else unchanged.

    The sampler shuffles when the loader did (a ``RandomSampler``), keeps ``drop_last``, and
    has its epoch set by the trainer every epoch. Loaders that already use a
    ``DistributedSampler`` and iterable datasets (which must shard themselves) pass through.
    """
    if not context.active or not isinstance(data, DataLoader):
        return data
    loader: DataLoader[Any] = data
    if isinstance(loader.sampler, DistributedSampler) or isinstance(
        loader.dataset, IterableDataset
    ):
        return loader
    if loader.batch_size is None:
        warnings.warn(
            "the DataLoader uses a custom batch_sampler, which multiloss cannot shard across "
            "processes; every rank will see the same batches. Give it a DistributedSampler.",
            RuntimeWarning,
            stacklevel=3,
        )
        return loader
    shuffle = isinstance(loader.sampler, RandomSampler) and shuffle_default
    sampler: DistributedSampler[Any] = DistributedSampler(
        loader.dataset,
        num_replicas=context.world_size,
        rank=context.rank,
        shuffle=shuffle,
        drop_last=loader.drop_last,
    )
    workers = loader.num_workers
    return DataLoader(
        loader.dataset,
        batch_size=loader.batch_size,
        sampler=sampler,
        num_workers=workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
        drop_last=loader.drop_last,
        timeout=loader.timeout,
        worker_init_fn=loader.worker_init_fn,
        multiprocessing_context=loader.multiprocessing_context if workers else None,
        generator=loader.generator,
        prefetch_factor=loader.prefetch_factor if workers else None,
        persistent_workers=loader.persistent_workers if workers else False,
    )
