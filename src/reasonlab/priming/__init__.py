"""Synthetic Countdown reasoning traces that show chosen cognitive behaviours, for priming.

``generate_traces("all_strategies", 100, seed=0)`` → scored Episodes with their true behaviour
counts; ``CONDITIONS`` names the conditions. See docs/priming.md.
"""

from reasonlab.priming.traces import BEHAVIORS, CONDITION_BEHAVIORS, CONDITIONS, generate_traces, iter_traces

__all__ = ["BEHAVIORS", "CONDITIONS", "CONDITION_BEHAVIORS", "generate_traces", "iter_traces"]
