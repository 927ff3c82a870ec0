"""Every record of the model is built by keyword in the probe's code, never positionally."""

import ast
from pathlib import Path

import lifecycle_probe
from lifecycle_probe import records

SOURCE = Path(lifecycle_probe.__file__).parent


def record_classes():
    return {
        name
        for name, value in vars(records).items()
        if isinstance(value, type)
        and issubclass(value, records.Record)
        and value is not records.Record
    }


def test_no_record_is_built_with_positional_arguments():
    # GIVEN the model's record classes
    names = record_classes()
    assert {"LifecycleEvent", "InvocationRecord"} <= names
    # WHEN every call of one of them in src/ is looked at
    positional = []
    for path in sorted(SOURCE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            if name in names:
                positional.append(f"{path.relative_to(SOURCE)}:{node.lineno} {name}")
    # THEN none passes a field by position
    assert positional == []
