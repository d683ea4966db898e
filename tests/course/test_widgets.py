"""The widgets' logic without a browser: views, checked inputs, the chat panel, first looks.

tests/test_browser.py drives the same widgets in JupyterLab; here everything runs in-process
(no kernel: `with Output()` does not capture, so printed lines reach capsys).
"""

import itertools
import os
import shutil

import matplotlib
import nbformat
import pytest
import torch

from mini_llm.errors import UserError
from tests.conftest import REPO

WIDGET_NOTEBOOKS = ("04_minigpt.ipynb", "06_sampling_and_chat.ipynb")


def course_home(run, root):
    """A project home whose newest run is `run` (the tiny trained model in tests): notebooks 04
    and 06 load it instead of training (fast, and the same model on every machine)."""
    shutil.copytree(run, root / "runs" / "tiny")
    return root


def kernel_env(home) -> dict:
    """The environment of a kernel that runs the course against `home`, drawing inline as for a learner."""
    env = dict(os.environ, MINI_LLM_HOME=str(home),
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    env.pop("MPLBACKEND", None)
    return env


@pytest.fixture(scope="session")
def executed_notebooks(trained_run, tmp_path_factory):
    """Copies of notebooks 04 and 06 executed as `jupyter nbconvert --execute` does (what a fresh
    clone holds once the notebooks are re-executed); the committed notebooks are not touched."""
    from nbclient import NotebookClient

    # one fixed folder per session: test_browser.py imports this fixture, and reuses the notebooks
    folder = tmp_path_factory.getbasetemp() / "executed-notebooks"
    if all((folder / name).exists() for name in WIDGET_NOTEBOOKS):
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    env = kernel_env(course_home(trained_run, folder / "home"))
    executed = {}
    for name in WIDGET_NOTEBOOKS:
        executed[name] = nbformat.read(REPO / "notebooks" / name, as_version=4)
        NotebookClient(executed[name], timeout=300, kernel_name="python3",
                       resources={"metadata": {"path": str(folder)}}).execute(env=env)
    for name, nb in executed.items():
        nbformat.write(nb, folder / name)
    return folder


@pytest.fixture(scope="module")
def loaded(trained_run):
    from mini_llm.checkpoint import load_checkpoint

    model, tok, _ = load_checkpoint(trained_run)
    return model, tok


# --- the plain functions ----------------------------------------------------------------------


def test_sampling_view(loaded):
    from mini_llm.course.widgets import next_token_probs, sampling_view

    model, tok = loaded
    text, fig = sampling_view(model, tok, "KING:\n", temperature=0.8, top_k=5, seed=1, max_new_tokens=10)
    assert isinstance(text, str) and isinstance(fig, matplotlib.figure.Figure)
    again, _ = sampling_view(model, tok, "KING:\n", temperature=0.8, top_k=5, seed=1, max_new_tokens=10)
    assert again == text
    labels, probs = next_token_probs(model, tok, "KING:\n", 1.0, None, None, top_n=10)
    assert len(labels) == 10 and probs == sorted(probs, reverse=True)


def test_the_plot_leaves_out_tokens_that_cannot_be_picked(loaded):
    from mini_llm.course.widgets import next_token_probs, sampling_view

    model, tok = loaded
    labels, probs = next_token_probs(model, tok, "KING:\n", 1.0, 5, None, top_n=15)
    assert len(labels) == 5 and abs(sum(probs) - 1.0) < 1e-5 and min(probs) > 0
    assert len(next_token_probs(model, tok, "KING:\n", 1.0, 1, None)[0]) == 1   # top-k 1: one bar
    assert len(next_token_probs(model, tok, "KING:\n", 0.0, 40, None)[0]) == 1  # temperature 0: argmax
    _, fig = sampling_view(model, tok, "KING:\n", top_k=1, max_new_tokens=3)
    assert len(fig.axes[0].patches) == 1


def test_attention_view(loaded):
    from mini_llm.course.widgets import attention_view

    model, tok = loaded
    labels, weights, fig = attention_view(model, tok, "the king spoke to the queen", layer=1, head=1)
    T = len(labels)
    assert weights.shape == (T, T) and torch.allclose(weights.sum(-1), torch.ones(T))
    assert weights.triu(1).abs().max() == 0
    with pytest.raises(UserError, match="layer must be in 0..1 and head in 0..1"):
        attention_view(model, tok, "x", layer=5)


@pytest.mark.parametrize("prompt", ["", "   ", "\n\t"])
def test_an_empty_prompt_is_a_one_line_error(loaded, prompt):
    from mini_llm.course.widgets import attention_view, next_token_probs, sampling_view

    model, tok = loaded
    for call in (lambda: sampling_view(model, tok, prompt=prompt), lambda: attention_view(model, tok, prompt, 0, 0),
                 lambda: next_token_probs(model, tok, prompt)):
        with pytest.raises(UserError, match="^empty prompt: type some text in the prompt box$"):
            call()


def test_a_prompt_longer_than_the_context_is_cut_with_a_note(loaded, capsys):
    from mini_llm.course.widgets import attention_view, sampling_view

    model, tok = loaded
    long = "the king and queen spoke with gentle words " * 20
    n = len(tok.encode(long).ids)
    assert n > model.config.block_size
    labels, weights, _ = attention_view(model, tok, long, 1, 0)
    assert len(labels) == model.config.block_size and weights.shape == (32, 32)
    text, _ = sampling_view(model, tok, long, max_new_tokens=5)
    assert isinstance(text, str)
    note = f"note: the prompt is {n} tokens; the model sees only its last 32 (its context)\n"
    assert capsys.readouterr().out == note * 2


def test_bad_settings_are_one_line_errors(loaded):
    from mini_llm.course.widgets import sampling_view

    model, tok = loaded
    for kw, message in [(dict(temperature=-1), "temperature"), (dict(top_k=0), "top-k"), (dict(top_p=0.0), "top-p"),
                        (dict(seed=-1), "seed -1"), (dict(seed=2**64), "seed"), (dict(max_new_tokens=0), "max new")]:
        with pytest.raises(UserError, match=message):
            sampling_view(model, tok, "KING:\n", **kw)


# --- the widgets, driven without a browser ----------------------------------------------------


def _interactive(panel):
    import ipywidgets

    ui = panel.children[0]
    assert isinstance(ui, ipywidgets.interactive)
    return ui, {c._kwarg: c for c in ui.kwargs_widgets}


def _printed(capsys) -> str:
    """What the widget printed (clear_output without a kernel writes an erase-line code)."""
    return capsys.readouterr().out.replace("\x1b[2K\r", "")


def _run(ui):
    """What pressing `generate` (or moving a slider) runs, with exceptions not swallowed."""
    ui.f(**{c._kwarg: c.get_interact_value() for c in ui.kwargs_widgets})


def test_every_slider_combination_gives_a_picture_or_one_line(loaded, capsys):
    from mini_llm.course.widgets import sampling_playground

    model, tok = loaded
    ui, c = _interactive(sampling_playground(model, tok))
    ends = lambda s: (s.min, s.max)  # noqa: E731  (every extreme of every slider)
    combos = itertools.product(ends(c["temperature"]), ends(c["top_k"]), ends(c["top_p"]), [c["max_new_tokens"].min])
    for t, k, p, n in [*combos, (1.0, 40, 0.5, c["max_new_tokens"].max)]:
        c["temperature"].value, c["top_k"].value, c["top_p"].value, c["max_new_tokens"].value = t, k, p, n
        _run(ui)
        assert "Figure" in capsys.readouterr().out  # display(fig) without a kernel prints its repr
    for prompt, seed, expected in [("", 0, "error: empty prompt: type some text in the prompt box\n"),
                                   (" \n", 0, "error: empty prompt: type some text in the prompt box\n"),
                                   ("KING:\n", -5, "error: seed -5 must be a whole number from 0 to 2**63 - 1\n")]:
        c["prompt"].value, c["seed"].value = prompt, seed
        _run(ui)
        assert _printed(capsys) == expected


def test_explorer_shows_one_line_for_an_empty_prompt(loaded, capsys):
    from mini_llm.course.widgets import attention_explorer

    model, tok = loaded
    ui, c = _interactive(attention_explorer(model, tok))  # redraws on every change, like in the browser
    for layer, head in [(1, 0), (1, 1), (0, 1)]:
        c["layer"].value, c["head"].value = layer, head
        assert "Figure" in capsys.readouterr().out
    c["text"].value = ""
    assert _printed(capsys) == "error: empty prompt: type some text in the prompt box\n"


def test_widgets_show_a_caption_not_their_repr(loaded):
    import ipywidgets
    from IPython.core.formatters import DisplayFormatter

    from mini_llm.course.widgets import attention_explorer, chat_panel, sampling_playground

    model, tok = loaded
    for make, name in [(sampling_playground, "sampling playground"), (attention_explorer, "attention explorer"),
                       (chat_panel, "chat panel")]:
        panel = make(model, tok)
        assert isinstance(panel, ipywidgets.VBox)
        data, _ = DisplayFormatter().format(panel)
        assert data["application/vnd.jupyter.widget-view+json"]["model_id"] == panel.model_id
        assert data["text/plain"].startswith(f"[{name}: an interactive widget. Run the notebook in Jupyter")


# --- the chat panel ---------------------------------------------------------------------------


def test_chat_log_streams_the_transcript(loaded):
    from mini_llm.course.widgets import ChatLog
    from mini_llm.generate import TorchRunner

    model, tok = loaded
    log = ChatLog(TorchRunner(model), tok, max_new_tokens=20, seed=0)
    user, bot = log.chat.user, log.chat.bot
    shown = list(log.send("Who are you?"))
    assert shown[0] == f"{user}> Who are you?\n{bot}> "
    assert all(later.startswith(earlier.rstrip()) for earlier, later in zip(shown, shown[1:-1]))
    assert len(shown) >= 3  # the message, at least one piece of the reply, the recorded turns
    assert shown[-1] == "\n".join(f"{name}> {text}" for name, text in log.chat.turns)
    assert [name for name, _ in log.chat.turns] == [user, bot]
    again = ChatLog(TorchRunner(model), tok, max_new_tokens=20, seed=0)
    assert list(again.send("Who are you?")) == shown  # seeded: the same reply


def test_chat_log_settings_keep_the_history_and_reset_clears_it(loaded):
    from mini_llm.course.widgets import ChatLog
    from mini_llm.generate import TorchRunner

    model, tok = loaded
    log = ChatLog(TorchRunner(model), tok, max_new_tokens=10)
    list(log.send("hello"))
    log.configure(max_new_tokens=5, temperature=0.0, top_k=1, top_p=0.5, seed=3)
    assert len(log.chat.turns) == 2 and log.chat.max_new_tokens == 5 and log.chat.sampling.top_p == 0.5
    log.configure(top_p=1.0)
    assert log.chat.sampling.top_p is None  # the slider's 1.0 means no nucleus cut
    with pytest.raises(UserError, match="seed"):
        log.configure(seed=-1)
    with pytest.raises(UserError, match="max new tokens 0"):
        log.configure(max_new_tokens=0)
    assert len(log.chat.turns) == 2  # a rejected setting changes nothing
    log.reset()
    assert log.chat.turns == [] and log.transcript() == ""
    with pytest.raises(UserError, match="empty message"):
        list(log.send("  "))


def test_chat_log_notes_a_message_longer_than_the_context(loaded):
    from mini_llm.course.widgets import ChatLog
    from mini_llm.generate import TorchRunner

    model, tok = loaded
    # 4 new tokens leave 28 of the 32-token window for the prompt: the default speaker names are
    # spelled in many byte tokens by this tiny tokenizer, and one short turn must still fit
    log = ChatLog(TorchRunner(model), tok, max_new_tokens=4)
    for _ in range(6):  # the history outgrows the window: Chat drops the oldest turns
        list(log.send("the king"))
    assert len(log.chat.turns) == 12 and log.notes == []
    list(log.send("the king and queen spoke with gentle words"))
    assert len(log.notes) == 1 and "to fit the context" in log.notes[0]


def test_chat_panel_without_a_browser(loaded):
    from mini_llm.course.widgets import chat_panel

    model, tok = loaded
    panel = chat_panel(model, tok, max_new_tokens=8)  # leaves 24 of the 32 tokens to the prompt
    view, status, row = panel.children[:3]
    box, reset = row.children
    sliders = {s.description: s for s in panel.children[3:]}
    box.value = "the king"  # what Enter does in the browser
    assert box.value == "" and not box.disabled
    assert "&gt; the king" in view.value and view.value.count("&gt;") == 2
    box.value = "   "
    assert view.value.count("&gt;") == 2 and status.value == ""
    sliders["seed"].value = -2
    assert status.value == "error: seed -2 must be a whole number from 0 to 2**63 - 1"
    sliders["seed"].value = 4
    assert status.value == ""
    box.value = "and the queen"
    assert view.value.count("&gt;") == 4
    reset.click()
    assert "&gt;" not in view.value and status.value == "(history cleared)"


# --- a clean first look: what executing the notebooks saves -----------------------------------


def test_executed_notebooks_save_captions_not_widget_reprs(executed_notebooks):
    """The saved widget outputs read well without a widget frontend (a fresh clone is untrusted:
    JupyterLab shows their text/plain). tests/test_browser.py checks the same in JupyterLab."""
    captions = []
    for name in WIDGET_NOTEBOOKS:
        nb = nbformat.read(executed_notebooks / name, as_version=4)
        for cell in (c for c in nb.cells if c.cell_type == "code"):
            for out in cell.outputs:
                assert out.output_type != "error", (cell.source[:80], out.get("evalue"))
                plain = str(out.get("data", {}).get("text/plain", ""))
                assert "VBox(" not in plain and "interactive(" not in plain, cell.source[:80]
                if "application/vnd.jupyter.widget-view+json" in out.get("data", {}):
                    captions.append(plain)
    assert [c[: c.index(":")] for c in captions] == ["[attention explorer", "[sampling playground", "[chat panel"]


def test_chat_log_talks_to_a_chat_tuned_model_in_its_template(chat_run):
    from mini_llm.checkpoint import load_checkpoint
    from mini_llm.course.widgets import ChatLog
    from mini_llm.generate import TorchRunner

    model, tok, _ = load_checkpoint(chat_run)
    log = ChatLog(TorchRunner(model), tok, max_new_tokens=8, seed=0)
    assert log.chat.tuned
    shown = list(log.send("the king queen?"))
    assert shown[0] == "user> the king queen?\nassistant> " and "<|end|>" not in shown[-1]
    assert [name for name, _ in log.chat.turns] == ["user", "assistant"]
    ids = log.chat.prompt_ids("the fool?")  # the history does not fit a context of 32 with room for 8: dropped whole
    assert tok.decode(ids, skip_special_tokens=False) == "<|user|>the fool?<|end|><|assistant|>"
