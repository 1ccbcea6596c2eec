"""Tasks: the protocol, the registry and the built-in tasks.

``get_task("countdown")``, ``get_task("gym/leg_counting")``; ``list_tasks()`` names them all.
"""

from reasonlab.tasks import countdown, gym, humaneval, toy  # noqa: F401  (registers the tasks)
from reasonlab.tasks.base import Task, extract_tag, get_task, list_tasks, register, split_of

__all__ = ["Task", "get_task", "list_tasks", "register", "split_of", "extract_tag"]
