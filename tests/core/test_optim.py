"""The optimizer a run steps with: AdamW groups, or Muon for the blocks' matrices and AdamW for the rest."""

import pytest
import torch

from mini_llm.model import MiniGPT
from mini_llm.muon import MuonWithAdamW
from mini_llm.optim import configure_optimizer
from tests.conftest import tiny_config


def _names(model, params) -> set:
    ids = {id(p) for p in params}
    return {name for name, p in model.named_parameters() if id(p) in ids}


def test_muon_gets_the_blocks_matrices_and_adamw_the_rest(prepared):
    cfg = tiny_config(optimizer="muon", muon_lr=0.03)
    model = MiniGPT(cfg.model_config(prepared.vocab_size))
    opt = configure_optimizer(model, cfg, torch.device("cpu"))
    assert isinstance(opt, MuonWithAdamW)
    muon = [p for group in opt.muon.param_groups for p in group["params"]]
    adamw = [p for group in opt.adamw.param_groups for p in group["params"]]
    expected = {f"blocks.{i}.{m}.weight" for i in range(cfg.n_layer)
                for m in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")}
    assert _names(model, muon) == expected
    every = [p for group in opt.param_groups for p in group["params"]]
    assert len(every) == len({id(p) for p in every}) == len(list(model.parameters()))  # each in exactly one group
    assert {"wte.weight", "wpe.weight", "ln_f.weight", "blocks.0.ln_1.bias", "blocks.0.attn.c_attn.bias"} <= \
        _names(model, adamw)
    decayed = _names(model, opt.adamw.param_groups[0]["params"])
    assert decayed == {"wte.weight", "wpe.weight"}  # the tied head is wte; gains and biases never decay
    group = opt.muon.param_groups[0]
    assert group["lr_scale"] == pytest.approx(0.03 / cfg.lr)
    assert group["lr"] * group["weight_decay"] == pytest.approx(cfg.lr * cfg.weight_decay)  # the same shrink per step


def test_adamw_stays_plain_adamw(prepared):
    cfg = tiny_config()
    model = MiniGPT(cfg.model_config(prepared.vocab_size))
    opt = configure_optimizer(model, cfg, torch.device("cpu"))
    assert type(opt) is torch.optim.AdamW and all("lr_scale" not in g for g in opt.param_groups)
