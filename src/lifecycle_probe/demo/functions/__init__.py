"""Example functions the demo runs in the local Lambda (each its own LAMBDA_TASK_ROOT module)."""

__all__: list[str] = []
