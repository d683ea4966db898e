"""The bridge to transformers: each option set to the class that computes it exactly (logits and
greedy tokens equal), export folders that Auto* classes open, imports back, and every refusal.
Models are tiny and made here: nothing is downloaded."""

import builtins
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from mini_llm.chat import Chat
from mini_llm.checkpoint import load_checkpoint, save_checkpoint
from mini_llm.errors import UserError
from mini_llm.model import ARCHS, GPTConfig, MiniGPT
from mini_llm.tokenizer import EOT, train_tokenizer_from_text
from tests.conftest import make_text

transformers = pytest.importorskip("transformers")

from mini_llm import hf  # noqa: E402

TINY = dict(vocab_size=300, block_size=32, n_embd=32, n_head=2, n_layer=2)
CLASSES = {  # options -> the class that computes them exactly
    "gpt2": (ARCHS["gpt2"], "GPT2LMHeadModel"),
    "tuned": (ARCHS["tuned"], "GPTNeoXForCausalLM"),
    "modern": (ARCHS["modern"], "ApertusForCausalLM"),
    "rope rmsnorm swiglu": (dict(ARCHS["modern"], qk_norm=False, mlp="swiglu"), "LlamaForCausalLM"),
    "rope rmsnorm relu2": (dict(ARCHS["modern"], qk_norm=False), "ArceeForCausalLM"),
    "rope rmsnorm qk_norm swiglu, no bias": (dict(ARCHS["modern"], mlp="swiglu", bias=False), "Qwen3ForCausalLM"),
    "gpt2 relu2 untied, no bias": (dict(ARCHS["gpt2"], mlp="relu2", tie_head=False, bias=False), "GPT2LMHeadModel"),
    "tuned, own eps and width": (dict(ARCHS["tuned"], norm_eps=1e-6, mlp_width=48, rope_base=500.0), "GPTNeoXForCausalLM"),
}


def _model(options: dict, seed: int = 0) -> MiniGPT:
    """A model whose every weight is random (zero-initialised ones too, so every path shows)."""
    g = torch.Generator().manual_seed(seed)
    model = MiniGPT(GPTConfig(**TINY, **options)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model


@pytest.fixture(scope="module")
def checkpoints(prepared, tmp_path_factory):
    """A checkpoint per arch (gpt2, tuned, modern without biases) with the course tokenizer of the test corpus."""
    folder = tmp_path_factory.mktemp("hf_checkpoints")
    options = {"gpt2": ARCHS["gpt2"], "tuned": ARCHS["tuned"], "modern": ARCHS["modern"]}
    return {arch: save_checkpoint(folder / arch, _model(opts), prepared.tokenizer, {"step": 7})
            for arch, opts in options.items()}


@pytest.mark.parametrize("name", CLASSES)
def test_each_option_set_maps_to_a_class_with_the_same_logits_and_greedy_tokens(name):
    options, cls = CLASSES[name]
    model = _model(options)
    assert hf.target_for(model.config).cls == cls
    theirs = hf.transformers_model(model, [0])
    assert type(theirs).__name__ == cls
    assert hf.logits_difference(model, theirs) < 1e-5
    ours, their_tokens = hf.greedy_both(model, theirs, [5, 6, 7], 25, [0])
    assert ours == their_tokens and len(ours) > 0
    back = hf.minigpt_from(theirs, hf.target_for(model.config))  # and back: the same weights where both have them
    mine = back.state_dict()
    assert all(torch.equal(t, mine[k]) for k, t in model.state_dict().items())
    assert hf.logits_difference(back, theirs) < 1e-5


@pytest.mark.parametrize("options, message", [
    (dict(ARCHS["modern"], bias=True), "bias=True has no counterpart in ApertusForCausalLM .*--no-bias"),
    (dict(ARCHS["tuned"], qk_norm=True), "qk_norm=True has no counterpart in GPTNeoXForCausalLM"),
    (dict(ARCHS["gpt2"], mlp="swiglu"), "mlp='swiglu' has no counterpart in GPT2LMHeadModel"),
    (dict(ARCHS["gpt2"], norm="rmsnorm"), "norm='rmsnorm' has no counterpart in GPT2LMHeadModel"),
    (dict(ARCHS["modern"], mlp="swiglu", bias=True), "bias=True has no counterpart in Qwen3ForCausalLM"),
])
def test_options_no_class_computes_are_refused_by_name(options, message):
    with pytest.raises(UserError, match=message):
        hf.target_for(GPTConfig(**TINY, **options))


def test_rotary_pairs_are_transformers_rotate_half_at_any_positions():
    """Our rotation of channel pairs (i, i + hs/2) at explicit positions (B, T) is transformers'
    apply_rotary_pos_emb with position_ids: no permutation of the q and k weights is needed."""
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

    from mini_llm.attention import rotary_angles, rotate_pairs

    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 3, 5, 16, generator=g), torch.randn(2, 3, 5, 16, generator=g)  # (B, nh, T, hs)
    positions = torch.tensor([[0, 1, 2, 3, 4], [7, 9, 10, 30, 31]])
    config = transformers.LlamaConfig(hidden_size=48, num_attention_heads=3, head_dim=16,
                                      rope_parameters={"rope_type": "default", "rope_theta": 500.0})
    theirs = apply_rotary_pos_emb(q, k, *LlamaRotaryEmbedding(config)(q, positions))
    cos, sin = rotary_angles(positions, 16, 500.0)
    assert torch.allclose(rotate_pairs(q, cos, sin), theirs[0], atol=1e-6)
    assert torch.allclose(rotate_pairs(k, cos, sin), theirs[1], atol=1e-6)


@pytest.mark.parametrize("arch, cls", [("gpt2", "GPT2LMHeadModel"), ("tuned", "GPTNeoXForCausalLM"),
                                       ("modern", "ApertusForCausalLM")])
def test_export_opens_with_auto_classes_and_imports_back(checkpoints, tmp_path, arch, cls):
    """The round trip: export, open with AutoModelForCausalLM / AutoTokenizer (no custom code), import back."""
    lines = []
    out = hf.export_hf(checkpoints[arch], tmp_path / "hf", log=lines.append)
    assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer.json", "tokenizer_config.json"} \
        <= {p.name for p in out.iterdir()}
    assert f"as {cls}" in lines[0] and "greedy generation" in lines[1] and "tokens: the same;" in lines[1]
    model, tokenizer, _ = load_checkpoint(checkpoints[arch])
    theirs = transformers.AutoModelForCausalLM.from_pretrained(out, trust_remote_code=False)
    assert type(theirs).__name__ == cls and hf.logits_difference(model, theirs) < 1e-5
    ours, their_tokens = hf.greedy_both(model, theirs, tokenizer.encode("KING:\n").ids, 20, hf.stop_ids(tokenizer))
    assert ours == their_tokens
    auto = transformers.AutoTokenizer.from_pretrained(out)
    text = "QUEEN:\nThe king  spoke.\n\n" + EOT + " Ωж"
    assert auto(text)["input_ids"] == tokenizer.encode(text).ids
    assert auto.decode(tokenizer.encode(text).ids) == text and auto.eos_token == EOT
    config = json.loads((out / "generation_config.json").read_text())
    assert config["eos_token_id"] == tokenizer.token_to_id(EOT) and config["do_sample"] and config["top_k"] == 40

    run = hf.import_hf(out, tmp_path / "run", log=lines.append)
    back, back_tokenizer, meta = load_checkpoint(run)
    assert "parity: max |ours - transformers| logits" in lines[-2] and meta["imported_from"]["class"] == cls
    assert back_tokenizer.to_str() == tokenizer.to_str()
    idx = torch.randint(0, 300, (2, 32), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert (back(idx)[0] - model(idx)[0]).abs().max() < 1e-5
    assert {k: v for k, v in back.config.to_dict().items() if k not in ("zero_init", "bias")} == \
        {k: v for k, v in model.config.to_dict().items() if k not in ("zero_init", "bias")}


def test_a_chat_tuned_checkpoint_works_through_apply_chat_template(checkpoints, tmp_path):
    """Chat fine-tuning adds the chat tokens and records its template in meta.json: the export puts the
    template in tokenizer_config.json, so transformers renders and encodes a conversation as our chat
    does, and generation stops at the end of a turn; imported back, the template stays with the model."""
    from mini_llm import chat_format

    model, tokenizer = chat_format.add_chat_tokens(*load_checkpoint(checkpoints["gpt2"])[:2])
    tuned = save_checkpoint(tmp_path / "chat", model, tokenizer, {"step": 9, **chat_format.metadata()})
    lines = []
    out = hf.export_hf(tuned, tmp_path / "hf", log=lines.append)
    assert "tokens: the same; tokenizer: the same ids" in lines[1]
    auto = transformers.AutoTokenizer.from_pretrained(out)
    messages = [{"role": "user", "content": "What is AI?"}, {"role": "assistant", "content": "A word.  "},
                {"role": "user", "content": "Art thou a machine?"}]
    rendered = auto.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert rendered == Chat(None, tokenizer).prompt_text("Art thou a machine?", [("user", "What is AI?"),
                                                                                ("assistant", "A word.")])
    ids = auto.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
    assert ids == chat_format.encode_chat(tokenizer, messages, add_generation_prompt=True)
    stops = json.loads((out / "generation_config.json").read_text())["eos_token_id"]
    assert stops == [tokenizer.token_to_id(EOT), tokenizer.token_to_id(chat_format.END)]
    _, back, meta = load_checkpoint(hf.import_hf(out, tmp_path / "run", log=lambda *a: None))
    assert chat_format.is_chat_tokenizer(back) and meta["chat_template"] == chat_format.JINJA


def test_a_chat_template_in_the_checkpoint_reaches_apply_chat_template(checkpoints, tmp_path):
    """Whatever template meta.json has goes to tokenizer_config.json as it is: here one by hand that
    writes a conversation as a play, as `Chat` does for a model that is not chat-tuned."""
    model, tokenizer, meta = load_checkpoint(checkpoints["gpt2"])
    template = ("{% for m in messages %}{{ 'HORATIO' if m['role'] == 'user' else 'HAMLET' }}:\n{{ m['content'] | trim }}"
                "\n\n{% endfor %}{% if add_generation_prompt %}HAMLET:\n{% endif %}")
    chat_checkpoint = save_checkpoint(tmp_path / "chat", model, tokenizer, {"step": 9, "chat_template": template})
    out = hf.export_hf(chat_checkpoint, tmp_path / "hf", verify=False, log=lambda *a: None)
    assert json.loads((out / "tokenizer_config.json").read_text())["chat_template"] == template
    auto = transformers.AutoTokenizer.from_pretrained(out)
    messages = [{"role": "user", "content": "What is AI?"}, {"role": "assistant", "content": "A word.  "},
                {"role": "user", "content": "Art thou a machine?"}]
    rendered = auto.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    ours = Chat(None, tokenizer).prompt_text("Art thou a machine?", [("HORATIO", "What is AI?"), ("HAMLET", "A word.")])
    assert rendered == ours
    ids = auto.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
    assert ids == tokenizer.encode(ours).ids
    no_template = hf.export_hf(checkpoints["gpt2"], tmp_path / "plain", verify=False, log=lambda *a: None)
    assert "chat_template" not in json.loads((no_template / "tokenizer_config.json").read_text())
    bad = save_checkpoint(tmp_path / "bad", model, tokenizer, {"step": 9, "chat_template": ["not", "a", "string"]})
    with pytest.raises(UserError, match="chat_template must be a Jinja template"):
        hf.export_hf(bad, tmp_path / "hf_bad", verify=False, log=lambda *a: None)


def test_export_replaces_only_an_earlier_export(checkpoints, tmp_path):
    taken = tmp_path / "mine"
    taken.mkdir()
    (taken / "notes.txt").write_text("keep me")
    with pytest.raises(UserError, match="exists and is not a transformers export"):
        hf.export_hf(checkpoints["gpt2"], taken, log=lambda *a: None)
    assert (taken / "notes.txt").read_text() == "keep me"
    out = hf.export_hf(checkpoints["gpt2"], tmp_path / "hf", verify=False, log=lambda *a: None)
    again = hf.export_hf(checkpoints["tuned"], out, verify=False, log=lambda *a: None)
    assert json.loads((again / "config.json").read_text())["architectures"] == ["GPTNeoXForCausalLM"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf", "mine"]  # no temporary folder left behind


def test_modern_with_biases_is_refused_before_anything_is_written(prepared, tmp_path):
    checkpoint = save_checkpoint(tmp_path / "ck", _model(dict(ARCHS["modern"], bias=True)), prepared.tokenizer, {"step": 1})
    with pytest.raises(UserError, match="bias=True has no counterpart"):
        hf.export_hf(checkpoint, tmp_path / "hf", log=lambda *a: None)
    assert not (tmp_path / "hf").exists()


def test_tiny_gpt2_is_a_real_gpt2_folder_made_without_the_network(tmp_path):
    state = torch.get_rng_state()
    folder = hf.tiny_gpt2(tmp_path / "tiny", seed=3)
    assert torch.equal(torch.get_rng_state(), state)  # seeded on its own: the global RNG is untouched
    theirs = transformers.GPT2LMHeadModel.from_pretrained(folder)
    assert theirs.config.n_embd == 64 and theirs.lm_head.weight is theirs.transformer.wte.weight
    again = transformers.GPT2LMHeadModel.from_pretrained(hf.tiny_gpt2(tmp_path / "again", seed=3))
    assert all(torch.equal(a, b) for a, b in zip(theirs.state_dict().values(), again.state_dict().values()))
    imported = hf.load_hf(folder, log=lambda *a: None)
    assert imported.cls == "GPT2LMHeadModel" and imported.model.config.arch_name == "gpt2"
    assert imported.model.config.norm_eps is None and imported.model.config.mlp_width is None  # GPT-2's are ours
    assert hf.logits_difference(imported.model, theirs) < 1e-5
    assert imported.tokenizer.decode(imported.tokenizer.encode("héllo").ids) == "héllo"


def test_gpt2_files_in_the_hubs_older_layout_import(tmp_path):
    """The Hub's gpt2 files predate today's names: no `transformer.` prefix, no lm_head (tied), and the
    attention masks saved as buffers. transformers maps them; the import takes the model as it is."""
    folder = hf.tiny_gpt2(tmp_path / "tiny")
    new = hf.load_hf(folder, log=lambda *a: None).model.state_dict()
    weights = load_file(str(folder / "model.safetensors"))
    old = {name.removeprefix("transformer."): t for name, t in weights.items() if name != "lm_head.weight"}
    for i in range(2):
        old[f"h.{i}.attn.bias"] = torch.ones(64, 64).tril().view(1, 1, 64, 64)
        old[f"h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    save_file(old, str(folder / "model.safetensors"), metadata={"format": "pt"})
    imported = hf.load_hf(folder, log=lambda *a: None)
    assert all(torch.equal(t, new[name]) for name, t in imported.model.state_dict().items())
    assert hf.logits_difference(imported.model, imported.transformers_model) < 1e-5


def test_gpt2_weights_load_into_a_model_with_minigpt_names(tmp_path):
    """What a learner's GPT (MiniGPT's parameter names) loads: GPT-2's Conv1D weights transposed, the head tied."""
    folder = hf.tiny_gpt2(tmp_path / "tiny")
    theirs = transformers.GPT2LMHeadModel.from_pretrained(folder).state_dict()
    ours = hf.load_hf(folder, log=lambda *a: None).model.state_dict()
    assert torch.equal(ours["blocks.1.attn.c_attn.weight"], theirs["transformer.h.1.attn.c_attn.weight"].t())
    assert torch.equal(ours["blocks.0.mlp.c_proj.weight"], theirs["transformer.h.0.mlp.c_proj.weight"].t())
    assert torch.equal(ours["lm_head.weight"], ours["wte.weight"])


def _save(model, folder):
    with hf.quiet_transformers():
        model.save_pretrained(folder)
    return folder


def test_import_refuses_what_minigpt_cannot_compute(tmp_path):
    tiny = hf.tiny_gpt2(tmp_path / "tiny")
    tokenizer = (tiny / "tokenizer.json").read_text()

    def folder_with(model, name):
        out = _save(model, tmp_path / name)
        (out / "tokenizer.json").write_text(tokenizer)
        return out

    small = dict(vocab_size=257, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                 max_position_embeddings=32)
    whole = {"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 1.0}
    parallel = transformers.GPTNeoXForCausalLM(transformers.GPTNeoXConfig(
        **small, hidden_act="gelu_new", rope_parameters=whole, use_parallel_residual=True))
    with pytest.raises(UserError, match="use_parallel_residual=True"):
        hf.load_hf(folder_with(parallel, "parallel"), log=lambda *a: None)
    quarter = transformers.GPTNeoXForCausalLM(transformers.GPTNeoXConfig(**small, hidden_act="gelu_new",
                                                                         use_parallel_residual=False))
    with pytest.raises(UserError, match="rotary positions"):  # transformers' default: a quarter of each head rotates
        hf.load_hf(folder_with(quarter, "quarter"), log=lambda *a: None)
    gqa = transformers.LlamaForCausalLM(transformers.LlamaConfig(**small, num_key_value_heads=1, hidden_act="silu"))
    with pytest.raises(UserError, match="grouped-query attention"):
        hf.load_hf(folder_with(gqa, "gqa"), log=lambda *a: None)
    erf = transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=257, n_embd=32, n_layer=1, n_head=2,
                                                               n_positions=32, activation_function="gelu"))
    with pytest.raises(UserError, match="activation 'gelu' in GPT2LMHeadModel"):
        hf.load_hf(folder_with(erf, "erf"), log=lambda *a: None)
    qwen = transformers.Qwen3ForCausalLM(transformers.Qwen3Config(**small, head_dim=16, num_key_value_heads=2))
    with torch.no_grad():
        qwen.model.layers[0].self_attn.q_norm.weight.fill_(2.0)  # a learned QK-norm gain: ours has none
    with pytest.raises(UserError, match=r"q_norm.weight holds values MiniGPT has no place for"):
        hf.load_hf(folder_with(qwen, "qwen"), log=lambda *a: None)
    bert = transformers.BertForMaskedLM(transformers.BertConfig(vocab_size=257, hidden_size=32, num_hidden_layers=1,
                                                               num_attention_heads=2, intermediate_size=64))
    with pytest.raises(UserError, match="holds a BertForMaskedLM: mini-llm imports the GPT-2 family"):
        hf.load_hf(folder_with(bert, "bert"), log=lambda *a: None)


def test_import_refuses_incomplete_or_unsafe_folders(tmp_path):
    with pytest.raises(UserError, match="no config.json, so not a transformers model folder"):
        hf.load_hf(tmp_path, log=lambda *a: None)
    tiny = hf.tiny_gpt2(tmp_path / "tiny")
    (tiny / "model.safetensors").rename(tiny / "pytorch_model.bin")  # stands for a pickled file: never opened
    with pytest.raises(UserError, match="only pickled pytorch_model.bin, which mini-llm never loads"):
        hf.load_hf(tiny, log=lambda *a: None)
    (tiny / "pytorch_model.bin").unlink()
    (tiny / "model.safetensors").write_bytes(b"\x00" * 100)
    with pytest.raises(UserError, match="the weights do not load"):
        hf.load_hf(tiny, log=lambda *a: None)
    holed = hf.tiny_gpt2(tmp_path / "holed")
    weights = load_file(str(holed / "model.safetensors"))
    del weights["transformer.h.1.mlp.c_fc.weight"]
    save_file(weights, str(holed / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(UserError, match=r"lack or misshape transformer.h.1.mlp.c_fc.weight \(and 0 more\)"):
        hf.load_hf(holed, log=lambda *a: None)
    other = hf.tiny_gpt2(tmp_path / "other")
    (other / "tokenizer.json").unlink()
    with pytest.raises(UserError, match="no tokenizer.json"):
        hf.load_hf(other, log=lambda *a: None)
    wide = hf.tiny_gpt2(tmp_path / "wide")
    train_tokenizer_from_text(make_text(), vocab_size=300).save(str(wide / "tokenizer.json"))  # another vocabulary
    with pytest.raises(UserError, match="257 token embeddings and its tokenizer 300 tokens"):
        hf.load_hf(wide, log=lambda *a: None)


def test_import_never_overwrites_a_run(tmp_path):
    tiny = hf.tiny_gpt2(tmp_path / "tiny")
    run = hf.import_hf(tiny, tmp_path / "run", log=lambda *a: None)
    before = (run / "best" / "model.safetensors").read_bytes()
    with pytest.raises(UserError, match="already holds a checkpoint"):
        hf.import_hf(hf.tiny_gpt2(tmp_path / "other", seed=1), run, log=lambda *a: None)
    assert (run / "best" / "model.safetensors").read_bytes() == before


def test_missing_transformers_says_what_to_install(checkpoints, tmp_path, monkeypatch):
    real_import = builtins.__import__

    def no_transformers(name, *args, **kwargs):
        if name.split(".")[0] == "transformers":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_transformers)
    for call in (lambda: hf.export_hf(checkpoints["gpt2"], tmp_path / "x"), lambda: hf.import_hf(tmp_path, tmp_path / "r"),
                 lambda: hf.tiny_gpt2(tmp_path / "t")):
        with pytest.raises(UserError, match=r'pip install "mini-llm\[hf\]"'):
            call()


def test_quiet_transformers_puts_the_settings_back():
    from huggingface_hub import utils as hub
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_info()
    hub.disable_progress_bars()  # the user's choice: no Hub progress bars, transformers' on
    try:
        with hf.quiet_transformers():
            assert hf_logging.get_verbosity() == hf_logging.ERROR and not hf_logging.is_progress_bar_enabled()
        assert hf_logging.get_verbosity() == hf_logging.INFO and hf_logging.is_progress_bar_enabled()
        assert hub.are_progress_bars_disabled()
    finally:
        hf_logging.set_verbosity_warning()
        hub.enable_progress_bars()


def test_the_parity_checks_catch_a_wrong_layout(checkpoints, tmp_path, monkeypatch):
    """Export and import compare logits with transformers: q, k, v left grouped where GPT-NeoX wants them
    interleaved per head is refused, not written as a model that computes something else."""
    good = hf.export_hf(checkpoints["tuned"], tmp_path / "good", log=lambda *a: None)
    before = (good / "model.safetensors").read_bytes()
    relayout = hf._relayout
    monkeypatch.setattr(hf, "_relayout", lambda t, how, n_head, to_theirs: relayout(t, "", n_head, to_theirs))
    with pytest.raises(UserError, match="transformers computes other logits than the model .* was not written"):
        hf.export_hf(checkpoints["tuned"], good, log=lambda *a: None)
    assert (good / "model.safetensors").read_bytes() == before  # the earlier export stays as it was
    with pytest.raises(UserError, match="the imported model computes other logits than transformers"):
        hf.import_hf(good, tmp_path / "run", log=lambda *a: None)
    assert not (tmp_path / "run").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good"]  # nothing half-written left behind
