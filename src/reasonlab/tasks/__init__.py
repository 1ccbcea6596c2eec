"""Tasks: the protocol, the registry and the built-in tasks.

``get_task("countdown")``, ``get_task("gym/leg_counting")``, ``get_task("sym/blocksworld")``,
``get_task("suite:r1ci/train")``, ``get_task("file:data.jsonl")``; ``list_tasks()`` names them all.
"""

from reasonlab.tasks import bbh, countdown, gym, humaneval, symbench, toy  # noqa: F401  (registers the tasks)
from reasonlab.tasks.procedural import register_specs
from reasonlab.tasks.suites import register_suites
from reasonlab.tasks.base import Task, extract_tag, get_task, list_tasks, register, split_of

register_specs()
register_suites()

__all__ = ["Task", "get_task", "list_tasks", "register", "split_of", "extract_tag"]
