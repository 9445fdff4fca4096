"""Cases for the shared auxiliary-loss-layer property tests (``tests/test_aux_family.py``).

Each module here defines ``CASES: list[AuxCase]`` for one family of layers, so work on
different layers never touches the same file. The family test collects every module.
"""
