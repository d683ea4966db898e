"""The widgets in a real JupyterLab, driven by headless Chromium (Playwright for Python).

Executes temporary copies of notebooks 04 and 06 as `jupyter nbconvert --execute` does (JupyterLab
autosaves executed notebooks, so the committed ones are never touched), with a project home whose
newest run is the tiny trained model, and starts `jupyter lab` on 127.0.0.1 with a token on them.
Opened, each shows its widgets' captions (the first look of a fresh clone). Then runs all cells
and uses each widget as a learner would: the explorer redraws for another layer, the
playground's text and plot change with the temperature, a chat reply streams in, an empty
prompt gives a one-line message. No output anywhere may be an error or a traceback.

Needs Chromium (Debian's `chromium` package; `.ci/run` installs it) and the `playwright` package
(the `dev` extra): without them the test is skipped with the reason. Screenshots of each widget go
to $MINI_LLM_SCREENSHOTS (`.ci/run` names it) or a temporary folder. docs/screenshots/ holds copies
taken with a checkpoint of `mini-llm train --time-budget 300`: MINI_LLM_BROWSER_RUN=runs/<that run>
uses it instead of the tiny test model.
"""

import base64
import io
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest
from PIL import Image

from tests.conftest import REPO
from tests.course.test_widgets import WIDGET_NOTEBOOKS, course_home, executed_notebooks, kernel_env  # noqa: F401 (a fixture)

CHROMIUM = os.environ.get("MINI_LLM_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(not (CHROMIUM and os.path.exists(CHROMIUM)),
                                reason="no Chromium here: install Debian's `chromium` package (.ci/run does)")
sync_api = pytest.importorskip("playwright.sync_api", reason="needs `playwright` (pip install -e '.[dev]')")

CAPTIONS = {"04_minigpt.ipynb": ["[attention explorer: an interactive widget."],
            "06_sampling_and_chat.ipynb": ["[sampling playground: an interactive widget.", "[chat panel: an interactive widget."]}
WAIT = 240_000  # ms: a generous bound for one notebook or one widget update on a slow, loaded 2-core machine
ERROR_OUTPUT = re.compile(r"Traceback|Error\b|\berror:")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def lab(tmp_path, trained_run, executed_notebooks):
    """A JupyterLab server on 127.0.0.1 serving copies of notebooks 04 and 06: yields its base URL."""
    nbdir = tmp_path / "notebooks"
    nbdir.mkdir()
    port, token = _free_port(), os.urandom(16).hex()
    run = Path(os.environ.get("MINI_LLM_BROWSER_RUN") or trained_run)  # a real run for docs/ screenshots
    env = dict(kernel_env(course_home(run, tmp_path / "home")), JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"),
               JUPYTERLAB_SETTINGS_DIR=str(tmp_path / "settings"), JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "workspaces"), IPYTHONDIR=str(tmp_path / "ipython"))
    news = tmp_path / "settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    news.parent.mkdir(parents=True)
    news.write_text('{"fetchNews": "false", "checkForUpdates": false}')  # no "get notified?" toast
    for name in WIDGET_NOTEBOOKS:  # executed as `jupyter nbconvert --execute` does: what a fresh clone holds
        shutil.copy(executed_notebooks / name, nbdir / name)
    cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
           "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={nbdir}",
           "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")
    log = open(tmp_path / "jupyter.log", "wb")
    server = subprocess.Popen(cmd, cwd=nbdir, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, (tmp_path / "jupyter.log").read_text()[-3000:]
            try:
                urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=5)
                break
            except OSError:
                assert time.monotonic() < deadline, "jupyter lab did not start in 120 s"
                time.sleep(0.5)
        yield url, token
    finally:
        _stop(server, f"{url}/api/shutdown?token={token}")
        log.close()


def _stop(server: subprocess.Popen, shutdown_url: str) -> None:
    """Ask the server to shut down (it stops its kernels); kill its process group if it does not."""
    try:
        urllib.request.urlopen(urllib.request.Request(shutdown_url, method="POST"), timeout=10)
        server.wait(timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        pass
    if server.poll() is None or _group_alive(server.pid):
        try:
            os.killpg(server.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        server.wait(timeout=30)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


@pytest.fixture
def browser(tmp_path):
    with sync_api.sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            tmp_path / "profile", executable_path=CHROMIUM, headless=True, viewport={"width": 1300, "height": 1000},
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run", "--no-default-browser-check"])
        context.set_default_timeout(WAIT)
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def shots(tmp_path) -> Path:
    folder = Path(os.environ.get("MINI_LLM_SCREENSHOTS") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# --- JupyterLab, as a learner uses it ---------------------------------------------------------

NOTEBOOK = ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook"


def open_and_run_all(page, url: str, token: str, name: str) -> None:
    """Open a notebook, wait for its kernel, clear the saved outputs, Run > Run All Cells, wait until
    every cell ran (a prompt reads [ ]: once cleared, [*]: while queued or running, [n]: when done)."""
    nb = nbformat.read(REPO / "notebooks" / name, as_version=4)
    code_cells = sum(c.cell_type == "code" for c in nb.cells)
    page.goto(f"{url}/lab/tree/{name}?reset&token={token}")  # reset: only this notebook, no restored tabs
    page.locator(NOTEBOOK).wait_for()
    cells = page.locator(f"{NOTEBOOK} .jp-Cell")
    wait_for(page, f"{name}: all cells shown", lambda: cells.count() == len(nb.cells), cells.count)
    status = page.locator("#jp-main-statusbar")  # "No Kernel | Initializing" until the kernel is connected
    wait_for(page, f"{name}: the kernel is ready", lambda: "ipykernel) | Idle" in status.inner_text(), status.inner_text)
    kernel_idle(page)
    first_look(page, name)
    page.locator(f"{NOTEBOOK} .jp-Cell").first.click()  # the menus act on the notebook that has the focus
    menu(page, "Edit", "Clear Outputs of All Cells")
    prompts = page.locator(f"{NOTEBOOK} .jp-CodeCell .jp-InputArea-prompt")
    cleared = lambda: prompts.all_text_contents() == ["[ ]:"] * code_cells  # noqa: E731
    wait_for(page, "the saved outputs are cleared", cleared, prompts.all_text_contents)
    run_all(page, prompts)
    done = lambda: [t for t in prompts.all_text_contents() if re.fullmatch(r"\s*\[\d+\]:\s*", t)]  # noqa: E731
    wait_for(page, f"{name}: every cell runs", lambda: len(done()) == code_cells, prompts.all_text_contents)
    kernel_idle(page)


def first_look(page, name: str) -> None:
    """Before running, an executed notebook opened in JupyterLab (untrusted, like a fresh clone)
    shows each widget's caption, never `VBox(children=...)`."""
    outputs = "\n".join(page.locator(f"{NOTEBOOK} .jp-OutputArea-output").all_text_contents())
    assert all(caption in outputs for caption in CAPTIONS[name]), outputs[-2000:]
    assert "VBox(" not in outputs and "interactive(" not in outputs


def run_all(page, prompts, tries: int = 6) -> None:
    """Run > Run All Cells, again while no cell starts: a kernel that is still connecting (the
    indicator may already read idle) makes JupyterLab skip the cells instead of queueing them."""
    for _ in range(tries):
        menu(page, "Run", "Run All Cells")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if any(t.strip() != "[ ]:" for t in prompts.all_text_contents()):
                return
            page.wait_for_timeout(500)
    raise AssertionError(f"Run All Cells started no cell in {tries} tries")


def menu(page, top: str, item: str) -> None:
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(f"^{top}$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(f"^{item}$")).click()


def kernel_idle(page) -> None:
    page.locator('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook-ExecutionIndicator[data-status="idle"]').wait_for()


def widget_cell(page, call: str):
    """The code cell whose source contains `call`, scrolled into view with its widget rendered."""
    cell = page.locator(f"{NOTEBOOK} .jp-CodeCell").filter(has_text=call)
    cell.scroll_into_view_if_needed()
    cell.locator(".jupyter-widgets.widget-vbox").first.wait_for()
    return cell


def panel(cell):
    return cell.locator(".jupyter-widgets.widget-vbox").first


def errors_in_outputs(page) -> list[str]:
    texts = page.locator(f"{NOTEBOOK} .jp-OutputArea-output").all_text_contents()
    return [t[:300] for t in texts if ERROR_OUTPUT.search(t)]


def set_slider(cell, label: str, value) -> None:
    """Type a value into a slider's readout (what a learner does after dragging, for an exact value)."""
    readout = cell.locator(".widget-slider").filter(has_text=label).locator(".widget-readout")
    readout.click()
    readout.press("Control+A")
    readout.type(str(value))
    readout.press("Enter")


def pixels(output) -> bytes:
    """The decoded pixels of the output's first picture (b"" while there is none). Two renders of
    one picture can differ as PNG bytes but not as pixels."""
    src = output.locator("img").first.get_attribute("src") if output.locator("img").count() else None
    if not src or "," not in src:
        return b""
    image = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
    return repr(image.size).encode() + image.convert("RGB").tobytes()


def wait_for(page, what: str, condition, state=lambda: "") -> None:
    deadline = time.monotonic() + WAIT / 1000
    while not condition():
        assert time.monotonic() < deadline, f"waited {WAIT // 1000} s: {what} {state()}"
        page.wait_for_timeout(250)


STREAM_RECORDER = """view => {
    window.__states = [];
    new MutationObserver(() => window.__states.push(view.textContent))
        .observe(view, {subtree: true, childList: true, characterData: true});
}"""


# --- the test ---------------------------------------------------------------------------------


def test_widgets_render_and_respond_in_jupyterlab(lab, browser, shots):
    url, token = lab
    page = browser.new_page()
    console_errors = []
    page.on("pageerror", lambda e: console_errors.append(str(e)))
    try:
        use_the_widgets(page, url, token, shots)
    except BaseException:
        page.screenshot(path=shots / "failure.png", full_page=True)
        print(f"screenshot of the failure: {shots / 'failure.png'}")
        raise
    assert console_errors == []
    print(f"screenshots: {shots}")


def use_the_widgets(page, url, token, shots):

    # 04: the attention explorer redraws for another layer; an empty prompt is one line
    open_and_run_all(page, url, token, "04_minigpt.ipynb")
    assert errors_in_outputs(page) == []
    cell = widget_cell(page, "attention_explorer(trained, tok)")
    out = cell.locator(".widget-output").last  # the panel's; interactive() has its own before it
    out.locator("img").first.wait_for()
    before = pixels(out)
    set_slider(cell, "layer", 1)
    wait_for(page, "the heatmap changes with the layer", lambda: pixels(out) not in (b"", before))
    set_slider(cell, "layer", 0)
    wait_for(page, "layer 0 again draws the first heatmap again", lambda: pixels(out) == before)
    set_slider(cell, "layer", 1)
    wait_for(page, "the heatmap changes with the layer", lambda: pixels(out) not in (b"", before))
    assert errors_in_outputs(page) == []
    panel(cell).screenshot(path=shots / "attention_explorer.png")
    cell.locator(".widget-text input").fill("")
    wait_for(page, "a message for the empty prompt", lambda: "empty prompt" in out.inner_text())
    assert out.inner_text().strip() == "error: empty prompt: type some text in the prompt box"

    # 06: the sampling playground's text and plot follow the temperature
    open_and_run_all(page, url, token, "06_sampling_and_chat.ipynb")
    assert errors_in_outputs(page) == []
    cell = widget_cell(page, "sampling_playground(model, tok)")
    out = cell.locator(".widget-output").last  # the panel's; interactive() has its own before it
    generate = cell.locator("button", has_text="generate")
    generate.click()
    out.locator("img").first.wait_for()
    text, plot = out.locator("pre").first.inner_text(), pixels(out)
    assert text.startswith("ROMEO:") and len(text) > len("ROMEO:") + 5
    set_slider(cell, "temperature", 2)
    generate.click()
    wait_for(page, "the plot changes with the temperature", lambda: pixels(out) not in (b"", plot))
    assert out.locator("pre").first.inner_text() != text
    assert errors_in_outputs(page) == []
    panel(cell).screenshot(path=shots / "sampling_playground.png")
    cell.locator(".widget-textarea textarea").fill("")
    generate.click()
    wait_for(page, "a message for the empty prompt", lambda: "empty prompt" in out.inner_text())
    assert out.inner_text().strip() == "error: empty prompt: type some text in the prompt box"

    # 06: the chat panel streams a reply into the conversation
    cell = widget_cell(page, "chat_panel(model, tok)")
    view = cell.locator(".widget-html").first
    view.evaluate(STREAM_RECORDER)
    box = cell.locator('.widget-text input[type="text"]')
    box.fill("Good morrow, my lord")
    box.press("Enter")
    wait_for(page, "the reply is complete (the box is emptied and enabled again)",
             lambda: box.input_value() == "" and box.is_enabled() and view.inner_text().count("> ") >= 2)
    lines = view.inner_text().strip().splitlines()
    assert lines[0].endswith("> Good morrow, my lord") and "> " in lines[1], lines
    states = [s for s in page.evaluate("window.__states") if "Good morrow" in s]
    assert len(set(states)) >= 3, f"the reply did not stream in pieces: {states}"  # message, pieces, final
    panel(cell).screenshot(path=shots / "chat_panel.png")
    cell.locator("button", has_text="reset").click()
    wait_for(page, "reset clears the conversation", lambda: "> " not in view.inner_text())

    assert errors_in_outputs(page) == [x for x in errors_in_outputs(page) if "error: empty prompt" in x]
