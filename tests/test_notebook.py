"""The tutorial notebook runs top to bottom in a real Jupyter kernel, and the library never
starts an event loop of its own (so top-level `await` in Jupyter's running loop works)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import anyio
import pytest

import granite_tuner
from granite_tuner import ConfigurationError
from tests.module_files import load_module_file

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "examples" / "tutorial.ipynb"
SOURCE = Path(granite_tuner.__file__).resolve().parent
RENDERER = ROOT / "scripts" / "render_notebook.py"

#: The smallest sizes that still show tuned > base on the shipped data (measured: see
#: docs/notebook.md). The defaults in the notebook are the full demo.
CI_SIZES = {
    "GRANITE_TUNER_TUTORIAL_EPOCHS": "2",
    "GRANITE_TUNER_TUTORIAL_TRAIN_EXAMPLES": "200",
    "GRANITE_TUNER_TUTORIAL_TEST_EXAMPLES": "40",
}

#: Where starting an event loop is the point: the command line's entry point, the worker
#: process torchrun starts for a multi-process run (its own `__main__`, never imported by a
#: notebook), and the fake watsonx.ai server, which runs in a thread of its own with its own loop.
LOOP_OWNERS = {"cli/_app.py", "backends/local/distributed.py", "testing/_server.py"}
STARTS_A_LOOP = re.compile(r"\b(?:anyio|asyncio|trio)\.run\(|\.run_until_complete\(")


def test_the_library_never_starts_an_event_loop_of_its_own() -> None:
    found = {
        f"{path.relative_to(SOURCE).as_posix()}:{number}"
        for path in SOURCE.rglob("*.py")
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if STARTS_A_LOOP.search(line.split("#")[0])
        and path.relative_to(SOURCE).as_posix() not in LOOP_OWNERS
    }
    assert not found, f"these would fail inside Jupyter's running loop: {sorted(found)}"
    assert STARTS_A_LOOP.search("    return anyio.run(main)")  # the pattern does match


def test_the_notebook_is_committed_without_outputs() -> None:
    notebook = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    code = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]
    assert code
    for cell in code:
        assert cell["outputs"] == [], "".join(cell["source"])[:80]
        assert cell["execution_count"] is None


def test_the_watsonx_cell_is_marked_and_guarded() -> None:
    notebook = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    (cell,) = [c for c in notebook["cells"] if "watsonx" in c["metadata"].get("tags", [])]
    source = "".join(cell["source"])
    assert source.startswith("if USE_WATSONX:")
    assert "WatsonxClient.from_env()" in source
    text = json.dumps(notebook)
    assert "GRANITE_TUNER_TUTORIAL_WATSONX" in text
    for variable in ("WATSONX_APIKEY", "WATSONX_URL", "WATSONX_PROJECT_ID"):
        assert variable in text


def _outputs(notebook: Any) -> list[Any]:
    return [
        output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs
    ]


@pytest.mark.slow
def test_the_tutorial_runs_top_to_bottom_in_a_real_kernel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nbclient = pytest.importorskip("nbclient")
    nbformat = pytest.importorskip("nbformat")
    pytest.importorskip("ipykernel")
    from granite_tuner.backends.local import DEFAULT_MODEL
    from granite_tuner.backends.local._models import default_home

    home = tmp_path / "home"
    converted = default_home() / "models" / DEFAULT_MODEL
    if (converted / "model.safetensors").is_file():  # reuse the conversion setup-env made
        (home / "models").mkdir(parents=True)
        (home / "models" / DEFAULT_MODEL).symlink_to(converted)
    monkeypatch.setenv("GRANITE_TUNER_HOME", str(home))
    monkeypatch.delenv("GRANITE_TUNER_TUTORIAL_WATSONX", raising=False)
    for name, value in CI_SIZES.items():
        monkeypatch.setenv(name, value)
    # One torch thread: on a runner shared with other jobs, a thread per core made each step
    # about seven times slower (threads spinning against each other's); alone, it costs little.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    # The kernel imports this checkout's granite_tuner, as the test process does.
    paths = [str(SOURCE.parent), os.environ.get("PYTHONPATH", "")]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in paths if p))

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        notebook,
        timeout=900,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()  # raises CellExecutionError, naming the cell, if any cell fails

    outputs = _outputs(notebook)
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert images, "the learning curve should show inline"
    tables = [o["data"]["text/html"] for o in outputs if "text/html" in o.get("data", {})]
    assert any("McNemar p" in table and "tuned vs base" in table for table in tables)
    assert any("95% CI" in table for table in tables)
    printed = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    match = re.search(r"accuracy: base (\d\.\d+) -> tuned (\d\.\d+)", printed)
    assert match, printed[-2000:]
    base, tuned = float(match[1]), float(match[2])
    assert tuned > base, f"tuned {tuned} is not better than base {base}"


def test_the_docs_page_shows_the_current_notebook() -> None:
    renderer = load_module_file(RENDERER, "render_notebook")
    expected = renderer.render(json.loads(NOTEBOOK.read_text(encoding="utf-8")))
    page = renderer.PAGE.read_text(encoding="utf-8")
    assert page == expected, "run: python scripts/render_notebook.py"


@pytest.mark.anyio
async def test_a_local_client_closed_from_another_task_says_so_and_stays_open(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """Jupyter runs each cell as its own task: closing a LocalClient in a later cell than the
    one that opened it gets a clear error, and the client goes on working."""
    from granite_tuner.backends.local import LocalClient

    client = LocalClient(str(tiny_model_dir), home=tmp_path / "home")
    opened, may_close = anyio.Event(), anyio.Event()

    async def first_cell() -> None:
        async with client:
            opened.set()
            await may_close.wait()

    async with anyio.create_task_group() as cells:
        cells.start_soon(first_cell)
        await opened.wait()
        with pytest.raises(ConfigurationError, match="opened in another task"):
            await client.__aexit__(None, None, None)
        assert await client.list_tuning_runs() == []  # still open
        may_close.set()
