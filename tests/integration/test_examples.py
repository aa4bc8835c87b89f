"""The README's doors: the quickstart demo and the quickstart notebook run top to bottom."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["llama", "tf"])
def test_quickstart_runs(backend, tmp_path):
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py"), "--backend", backend, "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "Paris" in out.stdout and "choose:   0" in out.stdout
    assert any(tmp_path.glob("choice_tree.*"))


@pytest.mark.slow
def test_quickstart_notebook_runs(tmp_path):
    import nbclient
    import nbformat

    notebook = nbformat.read(ROOT / "notebooks" / "quickstart.ipynb", as_version=4)
    nbclient.NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert "Paris" in str(outputs[0])


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_quantize_and_compare_runs(tmp_path):
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quantize_and_compare.py"), "--out", str(tmp_path), "--limit", "8"],
        capture_output=True,
        text=True,
        timeout=1700,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "Q4_K_M (llama)" in out.stdout and "transformers (tf)" in out.stdout
    assert {p.name for p in tmp_path.glob("*.gguf")} == {"smollm2-f16.gguf", "smollm2-q8_0.gguf", "smollm2-q4_k_m.gguf"}
    assert (tmp_path / "README.md").read_text().startswith("---\n") and (tmp_path / "comparison.png").is_file()


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_quantize_and_compare_notebook_runs(tmp_path):
    import nbclient
    import nbformat

    notebook = nbformat.read(ROOT / "notebooks" / "quantize_and_compare.ipynb", as_version=4)
    notebook.cells[1].source = notebook.cells[1].source.replace("LIMIT = None", "LIMIT = 6")
    nbclient.NotebookClient(
        notebook, timeout=1700, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert "Q4_K_M (llama)" in str(outputs) and (tmp_path / "smollm2-gguf" / "README.md").is_file()
