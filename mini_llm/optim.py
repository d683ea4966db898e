"""The optimizer a training run steps with: AdamW with decay / no-decay groups, or Muon for the
blocks' weight matrices with AdamW for the rest (`muon.py`), held together as one optimizer.

`cfg` is a `train.TrainConfig`, or anything with its fields optimizer, lr, weight_decay, beta1,
beta2, muon_lr, muon_momentum and Muon's iteration: muon_ns_steps, muon_ns_dtype, muon_batched.
"""

import torch

from mini_llm.muon import Muon, MuonWithAdamW


def configure_optimizer(model, cfg, device: torch.device, precision: str = "fp32"):
    """AdamW; weight decay only on matrices (not on biases, LayerNorm or anything 1-D). With
    cfg.optimizer "muon": Muon for the 2-D weights inside the blocks, AdamW as above for the rest
    (embeddings, LM head, gains, biases). `precision` is the training step's ("fp32" or "bf16"):
    with cfg.muon_ns_dtype "auto", Muon's iteration runs in bf16 where the step does."""
    params = [p for p in model.parameters() if p.requires_grad]
    muon = [p for p in muon_params(model) if p.requires_grad] if cfg.optimizer == "muon" else []
    taken = {id(p) for p in muon}
    params = [p for p in params if id(p) not in taken]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # fused: one kernel for all parameters, instead of a loop of small ops per tensor.
    extra = {"fused": True} if device.type in ("cpu", "cuda") else {"foreach": True}
    adamw = torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), **extra)
    if not muon:
        return adamw
    # The loop sets every group's LR to the schedule's LR times lr_scale: Muon's runs at muon_lr.
    # Its weight decay is scaled so that a matrix shrinks by lr * weight_decay per step under
    # either optimizer (with the defaults: 0.01 at LR 0.02, the Muon repository's recipe).
    scale = cfg.muon_lr / cfg.lr
    group = {"params": muon, "lr_scale": scale, "weight_decay": cfg.weight_decay / scale}
    muon = Muon([group], lr=cfg.muon_lr, momentum=cfg.muon_momentum, ns_steps=cfg.muon_ns_steps,
                ns_dtype=ns_dtype(cfg.muon_ns_dtype, precision), batched=cfg.muon_batched)
    return MuonWithAdamW(muon, adamw)


def ns_dtype(choice: str, precision: str) -> torch.dtype | None:
    """The dtype of Muon's iteration: "fp32" or "bf16" as asked; "auto": bf16 where the training
    step runs in bf16, else None (newton_schulz's default: bf16 on CUDA, fp32 elsewhere)."""
    if choice == "auto":
        return torch.bfloat16 if precision == "bf16" else None
    return {"fp32": torch.float32, "bf16": torch.bfloat16}[choice]


def muon_params(model) -> list:
    """The parameters Muon trains: the 2-D weight matrices inside the transformer blocks
    (attention and MLP projections). Embeddings and the LM head read or write tokens rather
    than mix hidden features, so they stay with AdamW, like everything 1-D."""
    return [p for p in model.blocks.parameters() if p.dim() == 2]


def set_lr(optimizer, lr: float) -> None:
    """Every group at the schedule's `lr`, times its lr_scale where it has one (Muon's groups)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
