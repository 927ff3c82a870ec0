"""Data flows one way: capture -> model -> sinks. Sinks and the model import no capture code.

Read from the source (imports at run time; those under ``if TYPE_CHECKING:`` are for the
type checker only), so that a new import of a capture module into a sink fails here.
"""

import ast
from pathlib import Path

import lifecycle_probe

PACKAGE = Path(lifecycle_probe.__file__).parent

# What a sink may use besides other sinks: the model, the probe's plumbing that knows no
# hook (failure reports, configuration, the probe's own threads, log-line writing, the
# cold-start count shared with Powertools).
SINK_MAY_IMPORT = {
    "lifecycle_probe.records",
    "lifecycle_probe._safe",
    "lifecycle_probe.config",
    "lifecycle_probe.probe_threads",
    "lifecycle_probe.loglines",
    "lifecycle_probe.coldstart",
}


def run_time_imports(path):
    """The lifecycle_probe modules ``path`` imports outside ``if TYPE_CHECKING:`` blocks."""
    tree = ast.parse(path.read_text())
    type_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            type_only.update(id(inner) for part in node.body for inner in ast.walk(part))
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.startswith("lifecycle_probe")}


def test_sinks_import_the_model_and_nothing_of_capture():
    sink_files = sorted((PACKAGE / "sinks").rglob("*.py"))
    assert len(sink_files) > 5
    wrong = {}
    for path in sink_files:
        imported = {
            name
            for name in run_time_imports(path)
            if not name.startswith("lifecycle_probe.sinks") and name not in SINK_MAY_IMPORT
        }
        if imported:
            wrong[str(path.relative_to(PACKAGE))] = sorted(imported)
    assert wrong == {}


def test_the_model_imports_nothing_of_the_probe():
    assert run_time_imports(PACKAGE / "records.py") == set()
    assert run_time_imports(PACKAGE / "probe_threads.py") == set()


def test_the_check_sees_an_import_of_capture(tmp_path):
    # the rule above can fail: a sink importing the environment is caught
    module = tmp_path / "bad_sink.py"
    module.write_text(
        "TYPE_CHECKING = False\n"
        "if TYPE_CHECKING:\n"
        "    from lifecycle_probe.extension import InternalExtension\n"
        "from lifecycle_probe.environment import current_environment\n"
    )
    assert run_time_imports(module) == {"lifecycle_probe.environment"}
