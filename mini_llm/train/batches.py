"""The batches a training run draws: reproducible, resumable, and each rank its own.

Two ways to visit the training split: random offsets (nanoGPT's `get_batch`, the default), or
every sliding window of `data.TextDataset`, in a seeded random order per epoch. Packed rows of
conversations (`data.PackedRows`, chat fine-tuning) are visited the same two ways: random rows,
or every row by epoch. Either way the
state that decides the next batch (a generator, or the epoch and the place in it) is saved in
each checkpoint, so a resumed run draws exactly the batches it would have drawn.
"""

import torch

from mini_llm.data import PackedRows, TextDataset, get_batch


class Batches:
    def __init__(self, ids, block_size: int, batch_size: int, seed: int, mode: str = "random", stride: int = 1,
                 rank: int = 0, world: int = 1):
        self.windows = ids if isinstance(ids, PackedRows) else TextDataset(ids, block_size, stride)
        self.ids = getattr(self.windows, "ids", None)  # text: (N,) as given, a memory-mapped file read a batch at a time
        self.block_size, self.batch_size, self.seed, self.mode = block_size, batch_size, seed, mode
        self.rank, self.world = rank, world
        self.generator = torch.Generator().manual_seed(seed * 1000 + rank)  # random offsets: each rank its own
        self.epoch, self.index = 0, 0  # sliding windows: where this epoch's order stands
        self._order = None

    @property
    def tokens_per_epoch(self) -> int:
        """Training tokens one pass covers: the whole split, or the tokens the windows start at."""
        if self.ids is None:
            return len(self.windows) * self.block_size
        return len(self.windows) * self.windows.stride if self.mode == "sliding" else len(self.ids)

    def next(self):
        """The next batch for this rank: x, y of shape (batch_size, block_size)."""
        if self.mode == "random" and self.ids is None:
            return self.windows.batch(torch.randint(len(self.windows), (self.batch_size,), generator=self.generator))
        if self.mode == "random":
            return get_batch(self.ids, self.batch_size, self.block_size, self.generator)
        B = self.batch_size
        if self._order is None or self.index + B * self.world > len(self._order):
            if self._order is not None:  # this epoch cannot fill one more step on every rank
                self.epoch, self.index = self.epoch + 1, 0
            self._order = self._epoch_order()
        take = self._order[self.index + self.rank * B : self.index + (self.rank + 1) * B]
        self.index += B * self.world
        return self.windows.batch(take)

    def _epoch_order(self) -> torch.Tensor:
        """The order of the sliding windows in this epoch: seeded, the same on every rank."""
        g = torch.Generator().manual_seed(self.seed * 7919 + self.epoch)
        return torch.randperm(len(self.windows), generator=g)

    def state(self) -> dict:
        return {"generator": self.generator.get_state(), "epoch": self.epoch, "index": self.index}

    def load_state(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.epoch, self.index = int(state["epoch"]), int(state["index"])
        if self.mode == "sliding" and self.index:
            self._order = self._epoch_order()
