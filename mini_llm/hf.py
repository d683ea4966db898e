"""The bridge to Hugging Face `transformers`: a checkpoint out as a transformers folder, GPT-2 in.

    export_hf(CHECKPOINT, DIR)   DIR/config.json, model.safetensors, generation_config.json,
                                 tokenizer.json, tokenizer_config.json (with the chat template when the
                                 checkpoint's meta.json has one), mini-llm.json (where it came from):
                                 AutoModelForCausalLM and AutoTokenizer open it, no custom code
    import_hf(NAME_OR_DIR, RUN)  a transformers folder, or a model on the Hub (gpt2, distilgpt2, ...:
                                 downloaded once into the Hub cache), as RUN/best: a checkpoint that
                                 generate, chat, export and `train --init-from` take like a trained one

No transformers class is MiniGPT, but for each combination of the model options one class computes
the same function once the tensors are laid out its way (`TARGETS`, checked in its modeling code):

    pos      norm       qk_norm  mlp             class                layout
    learned  layernorm  -        gelu or relu2   GPT2LMHeadModel      Conv1D: every matrix transposed
    rope     layernorm  -        gelu or relu2   GPTNeoXForCausalLM   one qkv matrix, q k v interleaved per head
    rope     rmsnorm    -        swiglu          LlamaForCausalLM     q, k, v split; gate, up split
    rope     rmsnorm    -        gelu or relu2   ArceeForCausalLM     q, k, v split
    rope     rmsnorm    yes      swiglu          Qwen3ForCausalLM     q, k, v split; no MLP biases
    rope     rmsnorm    yes      gelu or relu2   ApertusForCausalLM   q, k, v split; no MLP biases

So arch gpt2 goes to GPT-2, tuned to GPT-NeoX, and modern (which has no biases) to Apertus; a
modern model with biases has no class: none has per-head QK-norm, a plain relu^2 MLP and MLP biases. Rotary pairs (i, i + hs/2) are
transformers' "rotate_half" convention: no permutation. A tensor the class has and the model lacks
is neutral: a zero bias, a QK-norm gain of 1 (importing refuses one that is not). A model trained
with bias=False gets zero biases where its class always has them (GPT-2, GPT-NeoX's MLP).
"""

import contextlib
import json
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError

from mini_llm.errors import UserError
from mini_llm.paths import display, runs_dir

HF_HINT = 'transformers support needs the hf extra: pip install "mini-llm[hf]" (or pip install -e ".[hf]" in a checkout)'
PARITY_TOLERANCE = 1e-3  # as export.py's: tiny fp32 models agree to ~1e-6, a wrong layout is off by ~1
LAYERNORM_EPS = 1e-5  # torch's nn.LayerNorm default: what norm_eps=None means for LayerNorm
ACTIVATIONS = {"gelu": "gelu_pytorch_tanh", "relu2": "relu2", "swiglu": "silu"}  # our mlp -> transformers' name
ALSO_OURS = {"gelu_new": "gelu"}  # GPT-2's own name for the same tanh GELU (written out, not torch's kernel)
HUB_FILES = ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "*.safetensors",
             "model.safetensors.index.json"]  # what import needs from a Hub repo; pickled weights are never fetched
EXPORT_RECORD = "mini-llm.json"
GREEDY_DIFFERS = "different (two next tokens whose logits tie to rounding can do that; the logits decide)"


def _require_transformers():
    try:
        import transformers
    except ImportError:
        raise UserError(HF_HINT) from None
    return transformers


@contextlib.contextmanager
def quiet_transformers():
    """transformers logs notes (unset pad token, generation flags, ...) and shows progress bars for
    reading and writing a few files that take well under a second here; keep them out of the user's
    terminal and notebooks, and put its settings back after. (Downloads happen outside: their
    progress shows.)"""
    from huggingface_hub import utils as hub
    from transformers.utils import logging as hf_logging

    level, bars, hub_bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled(), \
        not hub.are_progress_bars_disabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()  # transformers' bars and the Hub's
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            yield
        finally:
            hf_logging.set_verbosity(level)
            (hf_logging.enable_progress_bar if bars else hf_logging.disable_progress_bar)()
            (hub.enable_progress_bars if hub_bars else hub.disable_progress_bars)()


# ---------------------------------------------------------------------------------------------
# Which class, and where each tensor goes


@dataclass(frozen=True)
class Target:
    """A transformers class and the MiniGPT options it computes exactly."""

    cls: str
    layout: str  # "gpt2", "neox" or "llama": how its tensors are named and laid out
    pos: str
    norm: str
    qk_norm: bool
    mlps: tuple[str, ...]
    mlp_bias: bool = True  # False: its MLP has no biases, so only bias=False models fit
    norms: tuple[str, str] = ("input_layernorm", "post_attention_layernorm")  # llama layout: a layer's two norms

    def holds(self, option: str, value) -> bool:
        if option == "mlp":
            return value in self.mlps
        if option == "bias":
            return self.mlp_bias or not value
        return getattr(self, option) == value


TARGETS = (
    Target("GPT2LMHeadModel", "gpt2", "learned", "layernorm", False, ("gelu", "relu2")),
    Target("GPTNeoXForCausalLM", "neox", "rope", "layernorm", False, ("gelu", "relu2")),
    Target("LlamaForCausalLM", "llama", "rope", "rmsnorm", False, ("swiglu",)),
    Target("ArceeForCausalLM", "llama", "rope", "rmsnorm", False, ("gelu", "relu2")),
    Target("Qwen3ForCausalLM", "llama", "rope", "rmsnorm", True, ("swiglu",), mlp_bias=False),
    Target("ApertusForCausalLM", "llama", "rope", "rmsnorm", True, ("gelu", "relu2"), mlp_bias=False,
           norms=("attention_layernorm", "feedforward_layernorm")),
)
OPTIONS = ("pos", "norm", "qk_norm", "mlp", "bias")  # in the order a class is picked by


def target_for(config) -> Target:
    """The class that computes this model exactly, or a one-line refusal naming the option that none holds."""
    fits = list(TARGETS)
    for i, option in enumerate(OPTIONS):
        value = getattr(config, option)
        left = [t for t in fits if t.holds(option, value)]
        if not left:
            matched = ", ".join(f"{name}={getattr(config, name)!r}" for name in OPTIONS[:i])
            hint = "; train with --no-bias to export" if option == "bias" else ""
            raise UserError(f"no transformers class computes this model exactly: {option}={value!r} has no counterpart in "
                            f"{', '.join(t.cls for t in fits)} (the classes with {matched}){hint}")
        fits = left
    return fits[0]


def tensor_map(target: Target, config) -> list[tuple[str, tuple[str, ...], str]]:
    """(our module, its counterparts in the class, how) for every module with tensors. Several
    counterparts: ours is theirs stacked along the output dimension (q, k, v; SwiGLU's gate, up).
    how: "" as it is, "transposed" (GPT-2's Conv1D keeps weights (in, out)), "interleaved" (GPT-NeoX's
    qkv holds each head's q, k, v rows together; ours all q, then all k, then all v)."""
    if target.layout == "gpt2":
        top = [("wte", "transformer.wte"), ("wpe", "transformer.wpe"), ("ln_f", "transformer.ln_f"), ("lm_head", "lm_head")]
        prefix, layer = "transformer.h.{i}.", [("ln_1", "ln_1", ""), ("attn.c_attn", "attn.c_attn", "transposed"),
                                               ("attn.c_proj", "attn.c_proj", "transposed"), ("ln_2", "ln_2", ""),
                                               ("mlp.c_fc", "mlp.c_fc", "transposed"), ("mlp.c_proj", "mlp.c_proj", "transposed")]
    elif target.layout == "neox":
        top = [("wte", "gpt_neox.embed_in"), ("ln_f", "gpt_neox.final_layer_norm"), ("lm_head", "lm_head")]
        prefix, layer = "gpt_neox.layers.{i}.", [
            ("ln_1", "input_layernorm", ""), ("attn.c_attn", "attention.query_key_value", "interleaved"),
            ("attn.c_proj", "attention.dense", ""), ("ln_2", "post_attention_layernorm", ""),
            ("mlp.c_fc", "mlp.dense_h_to_4h", ""), ("mlp.c_proj", "mlp.dense_4h_to_h", "")]
    else:
        top = [("wte", "model.embed_tokens"), ("ln_f", "model.norm"), ("lm_head", "lm_head")]
        up = ("mlp.gate_proj", "mlp.up_proj") if config.mlp == "swiglu" else "mlp.up_proj"
        prefix, layer = "model.layers.{i}.", [
            ("ln_1", target.norms[0], ""), ("attn.c_attn", ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"), ""),
            ("attn.c_proj", "self_attn.o_proj", ""), ("ln_2", target.norms[1], ""), ("mlp.c_fc", up, ""),
            ("mlp.c_proj", "mlp.down_proj", "")]
    pairs = [(ours, (theirs,), "") for ours, theirs in top]
    for i in range(config.n_layer):
        for ours, theirs, how in layer:
            theirs = (theirs,) if isinstance(theirs, str) else theirs
            pairs.append((f"blocks.{i}.{ours}", tuple(prefix.format(i=i) + name for name in theirs), how))
    return pairs


def _relayout(t: torch.Tensor, how: str, n_head: int, to_theirs: bool) -> torch.Tensor:
    """One of our tensors in the class's layout (to_theirs) or back."""
    if how == "transposed":
        return t.t() if t.dim() == 2 else t  # a bias is the same either way
    if how == "interleaved":  # rows (3, nh, hs) <-> (nh, 3, hs): q, k, v of head h together
        groups = (3, n_head) if to_theirs else (n_head, 3)
        return t.reshape(*groups, -1, *t.shape[1:]).transpose(0, 1).reshape(t.shape)
    return t


def _neutral(name: str, like: torch.Tensor) -> torch.Tensor | None:
    """The value a tensor the model lacks must have for the class to compute the model's function:
    a zero bias, a QK-norm gain of 1 (ours has none); None for any other tensor."""
    if name.endswith(".bias"):
        return torch.zeros_like(like)
    if name.endswith(("q_norm.weight", "k_norm.weight")):
        return torch.ones_like(like)
    return None


def to_transformers(model, target: Target, template: dict) -> dict:
    """Our state dict in the class's names and layouts; `template` (the class's own state dict) gives
    the tensors the model lacks, set neutral."""
    ours, cfg = model.state_dict(), model.config
    theirs = {}
    for mine, names, how in tensor_map(target, cfg):
        for kind in ("weight", "bias"):
            if f"{mine}.{kind}" in ours:
                t = _relayout(ours[f"{mine}.{kind}"], how, cfg.n_head, to_theirs=True)
                for name, part in zip(names, t.chunk(len(names))):
                    theirs[f"{name}.{kind}"] = part.contiguous()
    for name, like in template.items():
        if name not in theirs:
            theirs[name] = _neutral(name, like)
            if theirs[name] is None:
                raise RuntimeError(f"{target.cls}: nothing maps to {name}")  # a bug in tensor_map, not user input
    return theirs


def from_transformers(state: dict, target: Target, model) -> dict:
    """The class's state dict in our names and layouts, for `model` (a MiniGPT of the matching config).
    A tensor the class lacks is neutral here; one of theirs we cannot hold must be neutral there."""
    template, cfg = model.state_dict(), model.config
    ours, used = {}, set()
    for mine, names, how in tensor_map(target, cfg):
        for kind in ("weight", "bias"):
            if f"{mine}.{kind}" not in template:
                continue
            keys = [f"{name}.{kind}" for name in names]
            if kind == "bias" and not all(key in state for key in keys):  # e.g. GPT-NeoX without attention biases
                ours[f"{mine}.bias"] = torch.zeros_like(template[f"{mine}.bias"])
                continue
            t = torch.cat([state[key] for key in keys])
            ours[f"{mine}.{kind}"] = _relayout(t, how, cfg.n_head, to_theirs=False).contiguous()
            used.update(keys)
    for name, t in state.items():
        neutral = _neutral(name, t)
        if name not in used and (neutral is None or not torch.equal(t, neutral)):
            raise UserError(f"{target.cls}'s {name} holds values MiniGPT has no place for: this model cannot be "
                            "imported exactly")
    return ours


# ---------------------------------------------------------------------------------------------
# Configs both ways


def norm_eps(config) -> float:
    """The norms' epsilon as a number: norm_eps, or what None means (LayerNorm's 1e-5, RMSNorm's
    float32 machine epsilon, which is what an fp32 nn.RMSNorm(eps=None) and F.rms_norm use)."""
    if config.norm_eps is not None:
        return config.norm_eps
    return LAYERNORM_EPS if config.norm == "layernorm" else torch.finfo(torch.float32).eps


def transformers_config(target: Target, config, eot: int) -> dict:
    """The class's config for a MiniGPT config (its keys as transformers 5 names them); <|endoftext|>
    (id eot) begins and ends a text."""
    C, H, p = config.n_embd, config.mlp_hidden, config.dropout
    common = dict(vocab_size=config.vocab_size, bos_token_id=eot, eos_token_id=eot, tie_word_embeddings=config.tie_head)
    if target.layout == "gpt2":
        return dict(common, n_positions=config.block_size, n_embd=C, n_layer=config.n_layer, n_head=config.n_head,
                    n_inner=H, activation_function=ACTIVATIONS[config.mlp], layer_norm_epsilon=norm_eps(config),
                    resid_pdrop=p, embd_pdrop=p, attn_pdrop=p)
    rope = {"rope_type": "default", "rope_theta": config.rope_base}
    sizes = dict(common, hidden_size=C, num_hidden_layers=config.n_layer, num_attention_heads=config.n_head,
                 intermediate_size=H, hidden_act=ACTIVATIONS[config.mlp], max_position_embeddings=config.block_size,
                 attention_bias=config.bias, attention_dropout=p)
    if target.layout == "neox":
        return dict(sizes, rope_parameters=dict(rope, partial_rotary_factor=1.0), use_parallel_residual=False,
                    layer_norm_eps=norm_eps(config), hidden_dropout=p)
    llama = dict(sizes, rope_parameters=rope, num_key_value_heads=config.n_head, head_dim=C // config.n_head,
                 rms_norm_eps=norm_eps(config))
    return dict(llama, mlp_bias=config.bias) if target.mlp_bias else llama


def legacy_rope_keys(target: Target, config) -> dict:
    """The rotary settings under the names transformers 4 and converters that read config.json
    themselves know (transformers 5 reads rope_parameters): without them GPT-NeoX would rotate a
    quarter of each head, Apertus scale its frequencies."""
    if target.pos != "rope":
        return {}
    if target.layout == "neox":
        return {"rotary_pct": 1.0, "rotary_emb_base": config.rope_base, "rope_theta": config.rope_base}
    return {"rope_theta": config.rope_base, "rope_scaling": None}


def _refuse_unless(ok: bool, what: str) -> None:
    if not ok:
        raise UserError(f"{what}: MiniGPT has no such option, so this model cannot be imported exactly")


def our_options(target: Target, c) -> dict:
    """GPTConfig fields for a transformers config of `target`'s class; refuses what MiniGPT cannot compute."""
    act = c.activation_function if target.layout == "gpt2" else c.hidden_act
    mlp = ALSO_OURS.get(act) or next((ours for ours, theirs in ACTIVATIONS.items() if theirs == act), None)
    _refuse_unless(mlp in target.mlps, f"activation {act!r} in {target.cls}")
    options = dict(vocab_size=c.vocab_size, pos=target.pos, norm=target.norm, qk_norm=target.qk_norm, mlp=mlp,
                   tie_head=bool(c.tie_word_embeddings), dropout=0.0)
    if target.layout == "gpt2":
        _refuse_unless(c.scale_attn_weights and not c.scale_attn_by_inverse_layer_idx and not c.add_cross_attention,
                       "GPT-2 attention scaled by layer, unscaled, or with cross-attention")
        return dict(options, block_size=c.n_positions, n_embd=c.n_embd, n_head=c.n_head, n_layer=c.n_layer,
                    norm_eps=c.layer_norm_epsilon, mlp_width=c.n_inner or 4 * c.n_embd)
    rope = dict(c.rope_parameters)
    _refuse_unless(rope.pop("rope_type", "default") == "default" and rope.pop("partial_rotary_factor", 1.0) == 1.0
                   and set(rope) <= {"rope_theta"}, f"rotary positions {c.rope_parameters}")
    options.update(block_size=c.max_position_embeddings, n_embd=c.hidden_size, n_head=c.num_attention_heads,
                   n_layer=c.num_hidden_layers, mlp_width=c.intermediate_size, rope_base=float(rope["rope_theta"]))
    if target.layout == "neox":
        _refuse_unless(not c.use_parallel_residual, "use_parallel_residual=True (attention and MLP side by side)")
        return dict(options, norm_eps=c.layer_norm_eps)
    _refuse_unless(c.num_key_value_heads == c.num_attention_heads, "grouped-query attention (num_key_value_heads)")
    _refuse_unless(getattr(c, "head_dim", None) in (None, c.hidden_size // c.num_attention_heads), "head_dim")
    _refuse_unless(not getattr(c, "use_sliding_window", False), "sliding-window attention")
    return dict(options, norm_eps=c.rms_norm_eps)


def _defaults_as_none(options: dict) -> dict:
    """norm_eps and mlp_width that equal what None means become None: an imported GPT-2 has the
    classic model's config, and an exported model comes back with the config it had."""
    from mini_llm.model import GPTConfig

    plain = GPTConfig(**dict(options, norm_eps=None, mlp_width=None))
    return dict(options, norm_eps=None if options["norm_eps"] == norm_eps(plain) else options["norm_eps"],
                mlp_width=None if options["mlp_width"] == plain.mlp_hidden else options["mlp_width"])


# ---------------------------------------------------------------------------------------------
# Export


def stop_ids(tokenizer) -> list[int]:
    """Where generation stops: <|endoftext|>, and a chat-tuned model's end of turn."""
    from mini_llm import chat_format
    from mini_llm.tokenizer import EOT

    ends = [chat_format.token_ids(tokenizer)[chat_format.END]] if chat_format.is_chat_tokenizer(tokenizer) else []
    return [tokenizer.token_to_id(EOT), *ends]


def transformers_model(model, stops: list[int]):
    """The transformers model (eval mode) that computes what `model` computes, with generation
    defaults as ours: sampling at our temperature and top-k, stopping at any of `stops` (`stop_ids`)."""
    transformers = _require_transformers()
    from mini_llm.generate import TEMPERATURE, TOP_K, TOP_P

    target = target_for(model.config)
    cls = getattr(transformers, target.cls)
    with torch.random.fork_rng(devices=[]):  # its random init (overwritten next) leaves torch's RNG as it was
        hf_model = cls(cls.config_class(**transformers_config(target, model.config, stops[0])))
    hf_model.load_state_dict(to_transformers(model, target, hf_model.state_dict()), strict=True)
    sampling = dict(temperature=TEMPERATURE, top_k=TOP_K) | ({} if TOP_P is None else dict(top_p=TOP_P))
    hf_model.generation_config = transformers.GenerationConfig(
        do_sample=True, **sampling, bos_token_id=stops[0], eos_token_id=stops if len(stops) > 1 else stops[0],
        pad_token_id=stops[0])
    return hf_model.eval()


def write_tokenizer(folder: Path, tokenizer, block_size: int, chat_template: str | None = None) -> None:
    """tokenizer.json as it is, and the tokenizer_config.json that makes AutoTokenizer load it
    unchanged (the generic fast tokenizer: no class rebuilds the pipeline), <|endoftext|> as its
    bos and eos, and the chat template when there is one (for apply_chat_template)."""
    from mini_llm.tokenizer import EOT

    tokenizer.save(str(Path(folder) / "tokenizer.json"))
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": EOT, "eos_token": EOT,
              "model_max_length": block_size, "clean_up_tokenization_spaces": False}
    if chat_template is not None:
        if not isinstance(chat_template, str) or not chat_template.strip():
            raise UserError("meta.json: chat_template must be a Jinja template (a non-empty string)")
        config["chat_template"] = chat_template
    (Path(folder) / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False))


def _check_out(out: Path) -> None:
    """Refuse to replace a folder that is not an earlier export (nothing of the user's is overwritten)."""
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / EXPORT_RECORD).exists())):
        raise UserError(f"{display(out)} exists and is not a transformers export of mini-llm: choose another --out")


def _replace(tmp: Path, out: Path) -> None:
    """Put the finished folder in place: the old export is moved aside before, removed after."""
    old = out.with_name(f".{out.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)


def export_hf(checkpoint=None, out: Path | str = "exports/hf", verify: bool = True, log=print) -> Path:
    """Export a checkpoint (folder, run folder or None for the newest) as a transformers folder;
    with verify, load it back with AutoModelForCausalLM / AutoTokenizer and compare (`check_parity`)."""
    _require_transformers()
    from mini_llm.checkpoint import load_checkpoint
    from mini_llm.files import sha256_file

    model, tokenizer, meta = load_checkpoint(checkpoint, "cpu")
    out = Path(out)
    _check_out(out)
    target = target_for(model.config)
    start = time.perf_counter()
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:  # written and checked beside `out`, which is replaced only by a folder that passed
        with quiet_transformers():
            transformers_model(model, stop_ids(tokenizer)).save_pretrained(tmp)
        config = json.loads((tmp / "config.json").read_text())
        (tmp / "config.json").write_text(json.dumps(config | legacy_rope_keys(target, model.config), indent=2))
        write_tokenizer(tmp, tokenizer, model.config.block_size, meta.get("chat_template"))
        record = {"format": "mini-llm-hf-1", "class": target.cls, "source_checkpoint": display(meta["folder"]),
                  "source_sha256": sha256_file(Path(meta["folder"]) / "model.safetensors"),
                  "tokenizer_sha256": meta["tokenizer_sha256"], "step": meta.get("step"),
                  "model_config": model.config.to_dict()}
        (tmp / EXPORT_RECORD).write_text(json.dumps(record, indent=2))
        log(f"exported {display(meta['folder'])} -> {display(out)} as {target.cls} in {time.perf_counter() - start:.1f} s")
        if verify:
            report = check_parity(model, tmp, tokenizer)
            log(f"parity: max |transformers - ours| logits = {report['logits']:.2e}; greedy generation, "
                f"{report['tokens']} tokens: {'the same' if report['greedy'] else GREEDY_DIFFERS}; tokenizer: the same ids")
            if report["logits"] > PARITY_TOLERANCE:
                raise UserError(f"transformers computes other logits than the model (max difference {report['logits']:.2e} "
                                f"> {PARITY_TOLERANCE}), so {display(out)} was not written; please report this with your "
                                "transformers version")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _replace(tmp, out)
    return out


def logits_difference(model, hf_model, seed: int = 0) -> float:
    """Largest |logit difference| between a MiniGPT and a transformers model on random token ids,
    over a few shapes up to the whole context."""
    g = torch.Generator().manual_seed(seed)
    T, worst = model.config.block_size, 0.0
    for b, t in ((1, 1), (2, min(7, T)), (1, T)):
        idx = torch.randint(0, model.config.vocab_size, (b, t), generator=g)
        with torch.no_grad():
            ours, theirs = model(idx)[0], hf_model(idx).logits
        worst = max(worst, float((ours - theirs).abs().max()))
    return worst


def greedy_both(model, hf_model, prompt: list[int], max_new_tokens: int, stops: list[int]) -> tuple[list, list]:
    """The tokens greedy decoding adds to `prompt`, ours (`generate_ids`, KV cache) and transformers'
    (`generate`, its cache), each up to its first stop token; within one context window."""
    from mini_llm.generate import Sampling, TorchRunner, generate_ids

    ours = list(generate_ids(TorchRunner(model), prompt, max_new_tokens, Sampling(temperature=0.0)))
    with torch.no_grad(), quiet_transformers():
        out = hf_model.generate(torch.tensor([prompt]), max_new_tokens=max_new_tokens, do_sample=False)
    theirs = out[0, len(prompt):].tolist()
    return [_until(tokens, stops) for tokens in (ours, theirs)]


def _until(tokens: list[int], stops: list[int]) -> list[int]:
    return tokens[: next((i for i, t in enumerate(tokens) if t in stops), len(tokens))]


def check_parity(model, folder: Path, tokenizer) -> dict:
    """A transformers folder, opened as its users will (AutoModelForCausalLM, AutoTokenizer), against the
    model: {'logits': max difference, 'greedy': same tokens, 'tokens': how many}; a tokenizer that
    encodes differently is refused."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mini_llm.tokenizer import EOT

    text = f"KING:\nThe  king spoke.\n\n{EOT}  Ωж 🙂\r\n<|user|>Hi.<|end|>"  # chat tokens: special in a chat-tuned one
    with quiet_transformers():
        hf_model = AutoModelForCausalLM.from_pretrained(folder).eval()
        hf_ids = AutoTokenizer.from_pretrained(folder)(text)["input_ids"]
    if hf_ids != tokenizer.encode(text).ids:
        raise UserError("AutoTokenizer encodes text differently from the checkpoint's tokenizer; please report this")
    stops, T = stop_ids(tokenizer), model.config.block_size
    prompt = tokenizer.encode("\n").ids[: T // 2] or stops[:1]
    ours, theirs = greedy_both(model, hf_model, prompt, min(32, T - len(prompt)), stops)
    return {"logits": logits_difference(model, hf_model), "greedy": ours == theirs, "tokens": len(ours)}


# ---------------------------------------------------------------------------------------------
# Import


def _run_name(source) -> str:
    return Path(str(source).rstrip("/")).name or "imported"


def resolve_source(source) -> tuple[Path, str | None]:
    """A local folder as it is; otherwise a model name on the Hub, whose files (config, safetensors
    weights, tokenizer) come from the Hub cache, downloaded there first when missing (with progress
    bars; offline, HF_HUB_OFFLINE=1, only the cache is read). Returns (folder, the Hub commit or None)."""
    path = Path(source).expanduser()
    if path.is_dir():
        return path, None
    if path.exists():
        raise UserError(f"{display(path)} is a file: give a transformers model folder or a model name on the Hub")
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import (
        HfHubHTTPError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    try:
        folder = Path(snapshot_download(str(source), allow_patterns=HUB_FILES))
    except HFValidationError:
        raise UserError(f"{source}: no such folder, and not a model name on the Hub (like gpt2 or "
                        "openai-community/gpt2-medium)") from None
    except RepositoryNotFoundError:
        raise UserError(f"{source}: no such folder here, and no such model on the Hub (or it is private or gated)") from None
    except LocalEntryNotFoundError:
        raise UserError(f"{source}: not in the Hub cache ({constants.HF_HUB_CACHE}) and the Hub cannot be reached "
                        "(offline, or HF_HUB_OFFLINE=1): download it once online, or give a local folder") from None
    except (HfHubHTTPError, OSError) as e:
        raise UserError(f"{source}: the download from the Hub failed ({type(e).__name__}): try again, or give a "
                        "local folder") from None
    return folder, folder.name


def load_transformers_model(folder: Path):
    """(the transformers model in fp32 eval mode, its Target) from a folder with config.json and
    safetensors weights (pickled .bin weights are never loaded: unpickling runs code)."""
    transformers = _require_transformers()
    if not (folder / "config.json").exists():
        raise UserError(f"{display(folder)}: no config.json, so not a transformers model folder")
    try:
        with quiet_transformers():
            config = transformers.AutoConfig.from_pretrained(folder)
    except (OSError, ValueError, KeyError):
        raise UserError(f"{display(folder / 'config.json')}: not a config transformers can read (corrupt, or a newer "
                        "model type: pip install -U transformers)") from None
    name = (getattr(config, "architectures", None) or [config.model_type])[0]
    target = next((t for t in TARGETS if t.cls == name), None)
    if target is None:
        raise UserError(f"{display(folder)} holds a {name}: mini-llm imports the GPT-2 family and the classes it "
                        f"exports to ({', '.join(t.cls for t in TARGETS)})")
    if not any((folder / f).exists() for f in ("model.safetensors", "model.safetensors.index.json")):
        pickled = (folder / "pytorch_model.bin").exists()
        raise UserError(f"{display(folder)}: no model.safetensors" + (" (only pickled pytorch_model.bin, which mini-llm "
                        "never loads: unpickling runs code; convert it with save_pretrained first)" if pickled else ""))
    try:
        with quiet_transformers():
            hf_model, info = getattr(transformers, name).from_pretrained(
                folder, config=config, dtype=torch.float32, use_safetensors=True, output_loading_info=True)
    except (OSError, ValueError, RuntimeError, SafetensorError):
        raise UserError(f"{display(folder)}: the weights do not load (corrupt, truncated, or another model's)") from None
    lacking = sorted(info["missing_keys"]) + sorted(str(key) for key in info["mismatched_keys"])
    if lacking:  # transformers would fill them with random numbers
        raise UserError(f"{display(folder)}: the weights lack or misshape {lacking[0]} (and {len(lacking) - 1} more): "
                        "an incomplete or another model's file")
    return hf_model.eval(), target


def minigpt_from(hf_model, target: Target):
    """A MiniGPT (eval mode) holding a transformers model's weights, its config read from theirs."""
    from mini_llm.model import GPTConfig, MiniGPT

    state = hf_model.state_dict()
    options = our_options(target, hf_model.config)
    config = GPTConfig(**_defaults_as_none(dict(options, bias=any(name.endswith(".bias") for name in state))))
    with torch.random.fork_rng(devices=[]):  # its random init (overwritten next) leaves torch's RNG as it was
        model = MiniGPT(config)
    model.load_state_dict(from_transformers(state, target, model), strict=True)
    return model.eval()


@dataclass
class Imported:
    model: object  # MiniGPT, eval mode
    tokenizer: object
    transformers_model: object  # what it was read from, for comparisons
    cls: str
    folder: Path
    revision: str | None  # the Hub commit, for a model from the Hub
    chat_template: str | None  # tokenizer_config.json's, which a chat-tuned model's export carries


def _chat_template(folder: Path) -> str | None:
    """The folder's chat template: tokenizer_config.json's `chat_template` (where export_hf writes
    it), or chat_template.jinja (where transformers 5 may save it); None when there is none."""
    if (folder / "chat_template.jinja").exists():
        return (folder / "chat_template.jinja").read_text()
    try:
        template = json.loads((folder / "tokenizer_config.json").read_text()).get("chat_template")
    except (OSError, ValueError, AttributeError):
        return None
    return template if isinstance(template, str) else None


def load_hf(source, log=print) -> Imported:
    """A transformers folder or a Hub model name (`resolve_source`) as a MiniGPT and its tokenizer."""
    from mini_llm.tokenizer import load_tokenizer

    _require_transformers()
    folder, revision = resolve_source(source)
    log(f"reading {source}" + (f" from the Hub cache (commit {revision[:8]})" if revision else ""))
    hf_model, target = load_transformers_model(folder)
    if not (folder / "tokenizer.json").exists():
        raise UserError(f"{display(folder)}: no tokenizer.json (a fast tokenizer's file; save_pretrained writes it)")
    tokenizer = load_tokenizer(folder / "tokenizer.json")
    if tokenizer.get_vocab_size() != hf_model.config.vocab_size:
        raise UserError(f"{display(folder)}: the model has {hf_model.config.vocab_size:,} token embeddings and its "
                        f"tokenizer {tokenizer.get_vocab_size():,} tokens; MiniGPT needs the two equal")
    return Imported(minigpt_from(hf_model, target), tokenizer, hf_model, target.cls, folder, revision,
                    _chat_template(folder))


def import_hf(source, out: Path | str | None = None, verify: bool = True, log=print) -> Path:
    """A transformers model (folder or Hub name) as a checkpoint in the run folder `out` (default
    runs/<its name>): out/best, like a trained run's best checkpoint, at step 0."""
    from mini_llm.checkpoint import save_checkpoint

    out = Path(out) if out else runs_dir() / _run_name(source)
    if any((out / name / "meta.json").exists() for name in ("best", "last")):
        raise UserError(f"{display(out)} already holds a checkpoint: choose another --out")
    start = time.perf_counter()
    imported = load_hf(source, log)
    if verify:
        diff = logits_difference(imported.model, imported.transformers_model)
        log(f"parity: max |ours - transformers| logits = {diff:.2e}")
        if diff > PARITY_TOLERANCE:
            raise UserError(f"{source}: the imported model computes other logits than transformers (max difference "
                            f"{diff:.2e} > {PARITY_TOLERANCE}); please report this with your transformers version")
    origin = {"source": str(source) if imported.revision else display(imported.folder), "class": imported.cls,
              "revision": imported.revision}
    meta = {"step": 0, "imported_from": origin}
    if imported.chat_template is not None:  # exported again, it goes with the model
        meta["chat_template"] = imported.chat_template
    folder = save_checkpoint(out / "best", imported.model, imported.tokenizer, meta)
    cfg = imported.model.config
    log(f"imported {imported.cls} ({imported.model.num_params() / 1e6:.2f}M parameters, {cfg.n_layer} layers, "
        f"context {cfg.block_size}) -> {display(folder)} in {time.perf_counter() - start:.1f} s")
    return out


def tiny_gpt2(out: Path | str, n_layer: int = 2, n_head: int = 2, n_embd: int = 64, block_size: int = 64,
              seed: int = 0) -> Path:
    """A GPT-2 in miniature, made here and now: transformers' own GPT2LMHeadModel with random
    weights (seeded; torch's global RNG is left as it was) and a byte-level tokenizer of 257 tokens
    (the 256 bytes and <|endoftext|>), saved as a transformers folder laid out like the real `gpt2`
    (same config keys, Conv1D weights, tied head). What the course uses where gpt2 cannot be downloaded."""
    transformers = _require_transformers()
    from mini_llm.tokenizer import EOT, MIN_VOCAB, train_tokenizer_from_text

    tokenizer = train_tokenizer_from_text("", vocab_size=MIN_VOCAB)  # no merges: one token per byte
    eot = tokenizer.token_to_id(EOT)
    config = transformers.GPT2Config(vocab_size=MIN_VOCAB, n_positions=block_size, n_embd=n_embd, n_layer=n_layer,
                                     n_head=n_head, bos_token_id=eot, eos_token_id=eot)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = transformers.GPT2LMHeadModel(config)
    out = Path(out)
    with quiet_transformers():
        model.save_pretrained(out)
    write_tokenizer(out, tokenizer, block_size)
    return out
