"""Tests of ``multiloss.layers``."""
