"""Cases for the shared balancer property tests (``tests/balancing/test_family.py``).

Each module here defines ``CASES: list[BalancerCase]`` for the balancers of one author, so work
on different methods never touches the same file. The family test collects every module.
"""
