"""Data-parallel training under `torchrun` (DDP), and the no-ops that stand in for it in one process.

Each rank draws its own batches and dropout masks; DDP averages the gradients on backward; rank 0
alone logs, evaluates and writes. Rank 0's clock and evaluations decide for every rank (when to
stop, which LR, whether a checkpoint is the best), so no rank waits forever in an all-reduce the
others have left, and the replicas never drift (trap 15 in docs/TRAPS.md).

    torchrun --nproc_per_node 2 -m mini_llm.train --time-budget 300
"""

import os
import sys

import torch
import torch.distributed as dist


def setup() -> tuple[int, int, int]:
    """(rank, world size, local rank) under torchrun, else (0, 1, 0)."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return 0, 1, 0
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0))


def teardown(world: int) -> None:
    if world > 1:
        dist.destroy_process_group()


def barrier(world: int) -> None:
    if world > 1:
        dist.barrier()


def from_rank0(obj, world: int):
    """Rank 0's value on every rank."""
    if world == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(obj, world: int) -> list:
    """[obj of rank 0, obj of rank 1, ...] on every rank."""
    if world == 1:
        return [obj]
    objs = [None] * world
    dist.all_gather_object(objs, obj)
    return objs


def for_rank(states: list, rank: int):
    """This rank's entry of a gathered list (a run resumed on fewer ranks than saved it takes rank 0's)."""
    return states[rank] if rank < len(states) else states[0]


def wrap(model, device: torch.device, world: int):
    """The module the training step calls: the model itself, or DDP around it."""
    if world == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    return DDP(model, device_ids=[device.index] if device.type == "cuda" else None)


def ranks_in_sync(model, world: int) -> bool:
    """DDP keeps replicas identical; verify it with a checksum of the weights on every rank."""
    if world == 1:
        return True
    checksum = torch.stack([p.detach().double().sum() for p in model.parameters()]).sum().cpu().item()
    sums = gather(checksum, world)
    same = all(s == sums[0] for s in sums)
    if dist.get_rank() == 0:
        print(f"ranks in sync: {same} (weight checksums {sums})", file=sys.stderr)
    return same
