"""Sinks: where the trainer's logged rows go."""

from multiloss.sinks.base import RunInfo, Sink
from multiloss.sinks.csv import CSVSink
from multiloss.sinks.jsonl import JSONLSink
from multiloss.sinks.progress import ProgressBar
from multiloss.sinks.tensorboard import TensorBoardSink

__all__ = ["CSVSink", "JSONLSink", "ProgressBar", "RunInfo", "Sink", "TensorBoardSink"]
