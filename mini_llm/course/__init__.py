"""The course machinery around the notebooks: what they show and how learners are graded.

    runs.py        the trained models the notebooks explore and the committed reference runs
    widgets.py     the sampling playground, the attention explorer and the chat panel
    checks/        the checks behind every step and exercise, one module per notebook
    exercises.py   the exercise protocol, nbgrader metadata, student copies
    grade.py       grading a folder of submissions into grades.csv with feedback

The core (mini_llm/*.py) and training (mini_llm/train/) never import from here.
"""
