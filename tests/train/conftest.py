"""Fixtures of the training tests."""

import pytest

from tests.conftest import QUIET, tiny_config


@pytest.fixture()
def small_run(corpus_file, tmp_path):
    from mini_llm.train import train

    out = tmp_path / "run"
    train(tiny_config(max_steps=6, eval_interval=3), data=[corpus_file], out=out, **QUIET)
    return out
