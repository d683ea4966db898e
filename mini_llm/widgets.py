"""Where the notebooks' widgets lived before the package had rooms: student copies of the
notebooks handed out then still run `from mini_llm.widgets import ...`. The widgets are in
mini_llm/course/widgets.py; new notebooks import them from there."""

from mini_llm.course.widgets import *  # noqa: F401,F403
