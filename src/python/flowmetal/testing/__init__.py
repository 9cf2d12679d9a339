"""Test mode: `flowmetal test` runs `test_*` functions of `*_test.star` files on the real
engine (gate, store, lifecycle) with a virtual clock and fakes for outside effects.

- clock.py: VirtualClock, the injectable clock whose time moves only when told to.
- fakes.py: the fakes of `sh` and `http` (matched by pattern, recorded), given to the gate
  as its perform functions for outside effects.
- harness.py: one test's world: a fresh store, the clock, the fakes, and the driver that
  executes runs and jumps the clock to the next deadline when every run is blocked.
- tprelude.star: the `t` object, Starlark functions over the harness's host calls.
- runner.py: finding test files and functions, loading them, running each test.
- report.py: pytest-like text output and JUnit XML.
"""
