"""The notebooks' interactive pieces: plain functions first, widgets on top.

`sampling_view`, `attention_view` and `ChatLog` compute and draw; the ipywidgets UIs
(`sampling_playground`, `attention_explorer`, `chat_panel`) only wire controls to them. So every
picture can be made with a static call too, and the logic is tested without a browser.

Inputs are checked like the CLI's: an empty prompt, one longer than the context or a bad
sampling setting gives a one-line message in the widget (`error: ...` or `note: ...`), never a
traceback from inside torch.

A widget needs a live kernel. A notebook opened without one (a fresh clone is untrusted, so
JupyterLab shows only the saved plain text) shows each widget's caption instead of
`VBox(children=...)`: see `Panel`.
"""

import html

import ipywidgets as w
import matplotlib.pyplot as plt
import torch
from IPython.display import display

from mini_llm.chat import Chat
from mini_llm.errors import UserError
from mini_llm.generate import (
    TEMPERATURE,
    TOP_K,
    TOP_P,
    Sampling,
    TorchRunner,
    check_prompt,
    generate,
    next_token_distribution,
)
from mini_llm.plots import plot_attention, plot_distribution

# ---------------------------------------------------------------------------------------------
# Checked inputs


def prompt_ids(tokenizer, prompt: str, block_size: int, notice=print) -> list[int]:
    """The prompt's token ids, at most `block_size` of them (the last ones); a note when cut."""
    if prompt is None or not prompt.strip():
        raise UserError("empty prompt: type some text in the prompt box")
    check_prompt(prompt)  # text that is not valid UTF-8
    ids = tokenizer.encode(prompt).ids
    if len(ids) > block_size:
        notice(f"note: the prompt is {len(ids)} tokens; the model sees only its last {block_size} (its context)")
        ids = ids[-block_size:]
    return ids


def sampling_from(temperature: float = TEMPERATURE, top_k: int | None = TOP_K, top_p: float | None = TOP_P,
                  seed: int | None = 0) -> Sampling:
    """A checked `Sampling` from widget values: top-p 1 means no nucleus cut."""
    if seed is not None and not 0 <= seed < 2**63:
        raise UserError(f"seed {seed} must be a whole number from 0 to 2**63 - 1")
    return Sampling(temperature, top_k, None if top_p is None or top_p >= 1.0 else top_p, seed)


def token_strings(tokenizer, ids) -> list[str]:
    """Readable token labels: byte-level tokens decoded one by one (spaces shown as '·')."""
    def show(text: str) -> str:
        text = text.replace(" ", "·")
        return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)

    return [show(tokenizer.decode([i], skip_special_tokens=False)) for i in ids]


# ---------------------------------------------------------------------------------------------
# The pictures, as plain functions


@torch.no_grad()
def next_token_probs(model, tokenizer, prompt: str, temperature=1.0, top_k=None, top_p=None, top_n: int = 15,
                     notice=print):
    """The (at most `top_n`) most likely next tokens after `prompt` that sampling can pick, and
    their probabilities. Tokens that top-k or top-p cut away (probability 0) are left out."""
    s = sampling_from(temperature, top_k, top_p, seed=None)
    ids = prompt_ids(tokenizer, prompt, model.config.block_size, notice)
    device = next(model.parameters()).device
    logits, _ = model.eval()(torch.tensor([ids], device=device), last_only=True)
    probs = next_token_distribution(logits[0, -1], s.temperature, s.top_k, s.top_p)
    top = torch.topk(probs, min(top_n, int((probs > 0).sum())))
    return token_strings(tokenizer, top.indices.tolist()), top.values.tolist()


def sampling_view(model, tokenizer, prompt: str = "ROMEO:\n", temperature: float = TEMPERATURE,
                  top_k: int | None = TOP_K, top_p: float | None = TOP_P, seed: int = 0, max_new_tokens: int = 60, top_n: int = 15,
                  notice=print):
    """Generated text and a figure of the next-token distribution after the prompt."""
    if max_new_tokens < 1:
        raise UserError(f"max new tokens {max_new_tokens} must be at least 1")
    s = sampling_from(temperature, top_k, top_p, seed)
    labels, probs = next_token_probs(model, tokenizer, prompt, s.temperature, s.top_k, s.top_p, top_n, notice)
    ids = prompt_ids(tokenizer, prompt, model.config.block_size, notice=lambda _: None)  # noted above
    text = generate(TorchRunner(model), tokenizer, ids, max_new_tokens, s.temperature, s.top_k, s.top_p, s.seed)
    fig, ax = plt.subplots(figsize=(8, 3))
    title = f"next token after the prompt (T={s.temperature}, top-k={s.top_k}, top-p={s.top_p or 1.0})"
    plot_distribution(probs, labels, ax, title)
    fig.tight_layout()
    return text, fig


@torch.no_grad()
def attention_view(model, tokenizer, prompt: str, layer: int = 0, head: int = 0, notice=print):
    """(token labels, the (T, T) attention weights of one head, a heatmap figure)."""
    n_layer, n_head = model.config.n_layer, model.config.n_head
    if not (0 <= layer < n_layer and 0 <= head < n_head):
        raise UserError(f"layer must be in 0..{n_layer - 1} and head in 0..{n_head - 1}")
    ids = prompt_ids(tokenizer, prompt, model.config.block_size, notice)
    device = next(model.parameters()).device
    _, maps = model.eval().attention_maps(torch.tensor([ids], device=device))
    weights = maps[layer][0, head].cpu()  # (T, T)
    labels = token_strings(tokenizer, ids)
    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    plot_attention(weights.numpy(), labels, ax, f"layer {layer}, head {head}")
    fig.tight_layout()
    return labels, weights, fig


class ChatLog:
    """The chat panel without widgets: a `Chat` (which keeps the history inside the context, and
    talks to a chat-tuned model in its template, to a pretrained one as a play), sampling settings
    that can change mid-conversation, and the transcript the panel shows."""

    def __init__(self, runner, tokenizer, max_new_tokens: int = 60, **sampling):
        self.runner, self.tokenizer = runner, tokenizer
        self.notes: list[str] = []
        self.chat = None
        self.configure(max_new_tokens, **sampling)

    def configure(self, max_new_tokens: int = 60, **sampling) -> None:
        """New sampling settings (checked); the conversation so far is kept."""
        if max_new_tokens < 1:
            raise UserError(f"max new tokens {max_new_tokens} must be at least 1")
        turns = self.chat.turns if self.chat else []
        self.chat = Chat(self.runner, self.tokenizer, sampling=sampling_from(**sampling),
                         max_new_tokens=max_new_tokens, notice=self.notes.append)
        self.chat.turns = turns

    def reset(self) -> None:
        self.chat.reset()
        self.notes.clear()

    def send(self, message: str):
        """Stream a reply: yields the whole transcript again after each new piece of text."""
        if message is None or not message.strip():
            raise UserError("empty message: type something, then press Enter")
        check_prompt(message)
        self.notes.clear()
        reply = ""
        yield self.transcript((self.chat.user, message), (self.chat.bot, reply))
        for piece in self.chat.reply(message):
            reply += piece
            yield self.transcript((self.chat.user, message), (self.chat.bot, reply))
        yield self.transcript()

    def transcript(self, *pending) -> str:
        """The conversation as `NAME> text` lines (like `mini-llm chat`), plus a turn in progress."""
        return "\n".join(f"{name}> {text.strip()}" for name, text in [*self.chat.turns, *pending])


# ---------------------------------------------------------------------------------------------
# The widgets: controls wired to the functions above

WIDE = dict(style={"description_width": "110px"}, layout=w.Layout(width="560px"))


class Panel(w.VBox):
    """A VBox whose plain-text form is a caption, not `VBox(children=(...))`.

    JupyterLab shows a widget only from a live kernel; an untrusted notebook (a fresh clone) or a
    converted one shows the saved text/plain instead, which is then this caption.
    """

    def __init__(self, children, caption: str):
        super().__init__(children)
        self.caption = caption

    def _repr_mimebundle_(self, **kwargs):
        data = super()._repr_mimebundle_(**kwargs)
        data["text/plain"] = self.caption
        return data


def _show_errors(out: w.Output, work) -> None:
    """Run `work()` drawing into `out`; a UserError becomes one `error: ...` line there."""
    with out:
        out.clear_output(wait=True)
        try:
            work()
        except UserError as e:
            print(f"error: {e}")


def _sampling_controls(max_new_tokens: int) -> dict:
    """Sliders for the sampling settings, starting at generate's defaults (top-p 1: no nucleus cut)."""
    return dict(
        temperature=w.FloatSlider(value=TEMPERATURE, min=0.0, max=2.0, step=0.05, description="temperature", **WIDE),
        top_k=w.IntSlider(value=TOP_K, min=1, max=200, description="top-k", **WIDE),
        top_p=w.FloatSlider(value=TOP_P or 1.0, min=0.05, max=1.0, step=0.05, description="top-p", **WIDE),
        seed=w.IntText(value=0, description="seed", **WIDE),
        max_new_tokens=w.IntSlider(value=max_new_tokens, min=1, max=300, description="max new tokens", **WIDE),
    )


def sampling_playground(model, tokenizer, prompt: str = "ROMEO:\n"):
    """ipywidgets UI: prompt, temperature, top-k, top-p, seed, max tokens -> text + distribution."""
    controls = dict(prompt=w.Textarea(value=prompt, description="prompt", rows=3, **WIDE), **_sampling_controls(60))
    out = w.Output()

    def update(**kw):
        def work():
            text, fig = sampling_view(model, tokenizer, **kw)
            print(kw["prompt"] + text)
            display(fig)
            plt.close(fig)
        _show_errors(out, work)

    ui = w.interactive(update, {"manual": True, "manual_name": "generate"}, **controls)
    return Panel([ui, out], "[sampling playground: an interactive widget. Run the notebook in Jupyter to use "
                            "it; the next cell draws the same picture without one.]")


def attention_explorer(model, tokenizer, prompt: str = "To be, or not to be, that is the question"):
    """ipywidgets UI: pick a layer and a head, see its attention over the prompt's tokens."""
    out = w.Output()

    def update(text, layer, head):
        def work():
            _, _, fig = attention_view(model, tokenizer, text, layer, head)
            display(fig)
            plt.close(fig)
        _show_errors(out, work)

    ui = w.interactive(update, text=w.Text(value=prompt, description="prompt", **WIDE),
                       layer=w.IntSlider(min=0, max=model.config.n_layer - 1, description="layer", **WIDE),
                       head=w.IntSlider(min=0, max=model.config.n_head - 1, description="head", **WIDE))
    return Panel([ui, out], "[attention explorer: an interactive widget. Run the notebook in Jupyter to use "
                            "it; the next cell draws the same picture without one.]")


def chat_panel(model, tokenizer, max_new_tokens: int = 60):
    """ipywidgets UI: a conversation with the model. Enter sends, the reply streams in, `reset`
    clears the history; the sampling controls apply from the next message on."""
    log = ChatLog(TorchRunner(model), tokenizer, max_new_tokens)
    view = w.HTML(layout=w.Layout(width="680px", min_height="120px", border="1px solid #ccc", padding="4px"))
    status = w.HTML()
    box = w.Text(placeholder=f"you are {log.chat.user}: type a message, press Enter", description="message",
                 continuous_update=False, **WIDE)
    reset = w.Button(description="reset", tooltip="forget the conversation")
    sliders = _sampling_controls(max_new_tokens)

    def show(transcript: str) -> None:
        view.value = f"<pre style='white-space: pre-wrap; margin: 0'>{html.escape(transcript)}</pre>"

    def say(lines: list[str]) -> None:
        status.value = "<br>".join(html.escape(line) for line in lines)

    def configure(_=None):
        try:
            log.configure(**{name: s.value for name, s in sliders.items()})
            say([])
        except UserError as e:
            say([f"error: {e}"])

    def send(change):
        message = change["new"]
        if not message.strip():
            return  # the box was cleared (after sending, or by hand)
        box.disabled = True
        try:
            for transcript in log.send(message):
                show(transcript)
            say(log.notes)
        except UserError as e:
            say([f"error: {e}"])
        finally:
            box.value = ""
            box.disabled = False

    def clear(_):
        log.reset()
        show("")
        say(["(history cleared)"])

    box.observe(send, "value")
    reset.on_click(clear)
    for s in sliders.values():
        s.observe(configure, "value")
    show("")
    return Panel([view, status, w.HBox([box, reset]), *sliders.values()],
                 "[chat panel: an interactive widget. Run the notebook in Jupyter to talk to the model.]")
