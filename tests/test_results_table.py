"""README.md's results block is exactly what examples/results_table.py makes."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_results_block_matches_the_json():
    spec = importlib.util.spec_from_file_location(
        "results_table", ROOT / "examples" / "results_table.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    readme = (ROOT / "README.md").read_text()
    start = readme.index(module.BEGIN)
    end = readme.index(module.END) + len(module.END)
    assert readme[start:end] == module.table(), (
        "README.md's results block is stale: run `python examples/results_table.py "
        "--write`"
    )
