"""reasonlab: train and study LLM reasoners on verifiable tasks."""

from reasonlab.episode import Episode, Problem, Score

__version__ = "0.1.0"
__all__ = ["Episode", "Problem", "Score", "__version__"]
