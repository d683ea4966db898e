"""Training MiniGPT: what `mini-llm train` runs and the notebooks call.

    config.py        TrainConfig (the model's config plus how to train it) and each arch's recipe
    batches.py       the training batches: random offsets or sliding windows, resumable
    session.py       setting a session up: new, resumed (exact) or fine-tuned from another run
    loop.py          train(): the loop, evaluation, checkpoints, metrics, samples
    distributed.py   data-parallel under torchrun

    from mini_llm.train import TrainConfig, train
    summary = train(TrainConfig(time_budget=300))

    python -m mini_llm.train --time-budget 300      # the same as: mini-llm train --time-budget 300
"""

from mini_llm.train.batches import Batches
from mini_llm.train.config import RECIPES, TrainConfig
from mini_llm.train.loop import evaluate, train

__all__ = ["Batches", "RECIPES", "TrainConfig", "evaluate", "train"]
