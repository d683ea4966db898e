"""The notebooks' interactive pieces: plain functions first, widgets on top.

`sampling_view` and `attention_view` compute and draw; the ipywidgets UIs
(`sampling_playground`, `attention_explorer`) only wire sliders to them. So every picture can
be made with a static call too, and the logic is tested without a browser.
"""

import matplotlib.pyplot as plt
import torch

from mini_llm.generate import TorchRunner, generate, next_token_distribution
from mini_llm.plots import plot_attention, plot_distribution


def token_strings(tokenizer, ids) -> list[str]:
    """Readable token labels: byte-level tokens decoded one by one (spaces shown as '·')."""
    def show(text: str) -> str:
        text = text.replace(" ", "·")
        return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)

    return [show(tokenizer.decode([i], skip_special_tokens=False)) for i in ids]


@torch.no_grad()
def next_token_probs(model, tokenizer, prompt: str, temperature=1.0, top_k=None, top_p=None, top_n: int = 15):
    """The `top_n` most likely next tokens after `prompt` and their sampling probabilities."""
    ids = tokenizer.encode(prompt).ids[-model.config.block_size :]
    device = next(model.parameters()).device
    logits, _ = model.eval()(torch.tensor([ids], device=device), last_only=True)
    probs = next_token_distribution(logits[0, -1], temperature, top_k, top_p)
    top = torch.topk(probs, min(top_n, probs.numel()))
    return token_strings(tokenizer, top.indices.tolist()), top.values.tolist()


def sampling_view(model, tokenizer, prompt: str = "ROMEO:\n", temperature: float = 0.8, top_k: int | None = 40,
                  top_p: float | None = None, seed: int = 0, max_new_tokens: int = 60, top_n: int = 15):
    """Generated text and a figure of the next-token distribution after the prompt."""
    labels, probs = next_token_probs(model, tokenizer, prompt, temperature, top_k, top_p, top_n)
    text = generate(TorchRunner(model), tokenizer, prompt, max_new_tokens, temperature, top_k, top_p, seed)
    fig, ax = plt.subplots(figsize=(8, 3))
    plot_distribution(probs, labels, ax, f"next token after the prompt (T={temperature}, top-k={top_k}, top-p={top_p})")
    fig.tight_layout()
    return text, fig


@torch.no_grad()
def attention_view(model, tokenizer, prompt: str, layer: int = 0, head: int = 0):
    """(token labels, the (T, T) attention weights of one head, a heatmap figure)."""
    n_layer, n_head = model.config.n_layer, model.config.n_head
    if not (0 <= layer < n_layer and 0 <= head < n_head):
        raise ValueError(f"layer must be in 0..{n_layer - 1} and head in 0..{n_head - 1}")
    ids = tokenizer.encode(prompt).ids[-model.config.block_size :]
    device = next(model.parameters()).device
    _, maps = model.eval().attention_maps(torch.tensor([ids], device=device))
    weights = maps[layer][0, head].cpu()
    labels = token_strings(tokenizer, ids)
    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    plot_attention(weights.numpy(), labels, ax, f"layer {layer}, head {head}")
    fig.tight_layout()
    return labels, weights, fig


def sampling_playground(model, tokenizer, prompt: str = "ROMEO:\n"):
    """ipywidgets UI: prompt, temperature, top-k, top-p, seed, max tokens -> text + distribution."""
    import ipywidgets as w
    from IPython.display import display

    controls = dict(
        prompt=w.Textarea(value=prompt, description="prompt"),
        temperature=w.FloatSlider(value=0.8, min=0.0, max=2.0, step=0.05, description="temperature"),
        top_k=w.IntSlider(value=40, min=1, max=200, description="top-k"),
        top_p=w.FloatSlider(value=1.0, min=0.05, max=1.0, step=0.05, description="top-p"),
        seed=w.IntText(value=0, description="seed"),
        max_new_tokens=w.IntSlider(value=60, min=1, max=300, description="max tokens"),
    )
    out = w.Output()

    def update(**kw):
        with out:
            out.clear_output(wait=True)
            text, fig = sampling_view(model, tokenizer, **kw)
            print(kw["prompt"] + text)
            display(fig)
            plt.close(fig)

    ui = w.interactive(update, {"manual": True, "manual_name": "generate"}, **controls)
    return w.VBox([ui, out])


def attention_explorer(model, tokenizer, prompt: str = "To be, or not to be, that is the question"):
    """ipywidgets UI: pick a layer and a head, see its attention over the prompt's tokens."""
    import ipywidgets as w
    from IPython.display import display

    out = w.Output()

    def update(text, layer, head):
        with out:
            out.clear_output(wait=True)
            _, _, fig = attention_view(model, tokenizer, text, layer, head)
            display(fig)
            plt.close(fig)

    ui = w.interactive(update, text=w.Text(value=prompt, description="prompt"),
                       layer=w.IntSlider(min=0, max=model.config.n_layer - 1, description="layer"),
                       head=w.IntSlider(min=0, max=model.config.n_head - 1, description="head"))
    return w.VBox([ui, out])
