"""The training batches: random offsets or every sliding window, reproducible and resumable."""

import numpy as np
import torch

from mini_llm.data import TextDataset, get_batch
from mini_llm.train import Batches

IDS = np.arange(1000, dtype=np.uint16)  # every window is different


def test_sliding_batches_are_the_datasets_windows():
    """In sliding mode a batch is TextDataset's items at the epoch's shuffled indices (the window
    arithmetic lives in data.py alone), and an epoch visits every window once."""
    batches = Batches(IDS, block_size=16, batch_size=8, seed=3, mode="sliding", stride=4)
    dataset = TextDataset(IDS, 16, 4)
    seen = []
    for _ in range(len(dataset) // 8):
        x, y = batches.next()
        for xi, yi in zip(x, y):
            match = [j for j in range(len(dataset)) if torch.equal(dataset[j][0], xi) and torch.equal(dataset[j][1], yi)]
            assert match, xi
            seen.append(match[0])
    assert sorted(seen) == sorted(set(seen)) and len(seen) == len(dataset) // 8 * 8
    assert batches.tokens_per_epoch == len(dataset) * 4


def test_random_batches_are_get_batch_from_the_same_generator():
    batches = Batches(IDS, block_size=16, batch_size=8, seed=5)
    g = torch.Generator().manual_seed(5 * 1000)
    for _ in range(3):
        x, y = batches.next()
        want = get_batch(torch.from_numpy(IDS.astype(np.int64)), 8, 16, g)
        assert torch.equal(x, want[0]) and torch.equal(y, want[1])


def test_resumed_batches_continue_where_they_stood():
    for mode in ("random", "sliding"):
        a = Batches(IDS, 16, 8, seed=1, mode=mode)
        for _ in range(5):
            a.next()
        b = Batches(IDS, 16, 8, seed=1, mode=mode)
        b.load_state(a.state())
        assert all(torch.equal(p, q) for _ in range(4) for p, q in zip(a.next(), b.next())), mode
