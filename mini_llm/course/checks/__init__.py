"""The exercise checks: one module per notebook, in course order, over one shared harness.

    harness.py                 Result, the case runner, comparing and describing values
    nb01_tokenization.py ...   the checks of that notebook's steps and exercises

Every `check_...` of every notebook is importable from here (`from mini_llm.course.checks import
check_top_k`); `module_of` names the module that defines one (the grader reloads it).
"""

import importlib

from mini_llm.course.checks.harness import Result  # noqa: F401  (the type every check returns)

NOTEBOOK_MODULES = ("nb01_tokenization", "nb02_datasets", "nb03_attention", "nb04_minigpt", "nb05_training",
                    "nb06_sampling_and_chat", "nb07_export", "nb08_modern_gpt", "nb09_chat_finetuning",
                    "nb10_gpt2_and_transformers")


def _notebook_checks() -> dict:
    """check name -> the notebook module that defines it."""
    found = {}
    for name in NOTEBOOK_MODULES:
        module = importlib.import_module(f"{__name__}.{name}")
        found.update({k: module for k in vars(module) if k.startswith("check_")})
    return found


def module_of(check: str):
    """The notebook module that defines `check` (a name such as "check_top_k"), or None."""
    module = _notebook_checks().get(check)
    return module


globals().update({name: getattr(module, name) for name, module in _notebook_checks().items()})
