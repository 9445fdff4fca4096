"""The built-in demo: a digits classifier trained with several named losses."""

from multiloss.demo.run import DemoResult, run_demo

__all__ = ["DemoResult", "run_demo"]
