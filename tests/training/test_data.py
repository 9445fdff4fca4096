"""DataStream: epochs, set_epoch, and resuming at the exact batch."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from multiloss.training.data import DataStream
from multiloss.training.rng import get_rng_state, set_rng_state


def _loader() -> DataLoader:
    return DataLoader(TensorDataset(torch.arange(10.0)), batch_size=3, shuffle=True)


def test_epochs_close_eagerly_when_length_is_known() -> None:
    stream = DataStream(_loader(), max_epochs=2)
    batches = []
    while True:
        try:
            batches.append(stream.next())
        except StopIteration:
            break
    assert len(batches) == 8  # 4 batches per epoch, 2 epochs
    assert stream.epoch == 2


@pytest.mark.parametrize("position", [0, 1, 3])
def test_resume_continues_with_the_same_batches(position: int) -> None:
    torch.manual_seed(0)
    stream = DataStream(_loader())
    stream.next()
    stream.next()
    stream.next()
    stream.next()  # epoch 0 done
    for _ in range(position):
        stream.next()
    saved = stream.state_dict()
    rng = get_rng_state()
    expected = [stream.next()[0].tolist() for _ in range(6)]

    torch.manual_seed(123)  # a new process: different RNG
    resumed = DataStream(_loader())
    resumed.load_state_dict(saved)
    set_rng_state(rng)
    assert [resumed.next()[0].tolist() for _ in range(6)] == expected


def test_set_epoch_is_called_on_distributed_samplers() -> None:
    data = TensorDataset(torch.arange(8.0))
    sampler = DistributedSampler(data, num_replicas=2, rank=0, shuffle=True, seed=0)
    stream = DataStream(DataLoader(data, batch_size=2, sampler=sampler))
    for _ in range(2):
        stream.next()
    assert sampler.epoch == 0
    stream.next()
    assert sampler.epoch == 1


def test_one_shot_iterator_gives_one_epoch_and_empty_data_errors() -> None:
    stream = DataStream(iter([1, 2]))
    assert [stream.next(), stream.next()] == [1, 2]
    with pytest.raises(StopIteration):
        stream.next()
    with pytest.raises(ValueError, match="`data` is empty"):
        DataStream([])


def test_resume_into_shorter_data_is_a_clear_error() -> None:
    stream = DataStream(_loader())
    for _ in range(3):
        stream.next()
    saved = stream.state_dict()
    short = DataStream(DataLoader(TensorDataset(torch.arange(4.0)), batch_size=3, shuffle=True))
    with pytest.raises(ValueError, match="cannot resume at batch 3 of epoch 0"):
        short.load_state_dict(saved)


def test_data_that_is_not_batches_is_named() -> None:
    for data in (3, "abc", torch.ones(4)):
        with pytest.raises(TypeError, match="`data` must be an iterable of batches"):
            DataStream(data)  # type: ignore[arg-type]
