"""A seeded random workload for the local Lambda: bursts, pauses, reaps, kills, failures.

Used by the scenario test (``test_random_scenario.py``, 300+ invocations in CI). The long
run, thousands of invocations with every record accounted for, is the soak
(``python -m tests.soak.run_soak``), which drives a workload of its own
(``tests/soak/workload.py``).
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

from lifecycle_probe.emulator import LocalLambda


def run_scenario(emulator: LocalLambda, rng: random.Random, invocations: int) -> Counter[str]:
    """Drive ``emulator`` with a random mix of operations until ``invocations`` were served.

    Returns how many times each operation ran.
    """
    done: Counter[str] = Counter()
    operations = [
        ("sequence", 30),
        ("burst", 20),
        ("pause", 15),
        ("reap-pause", 3),
        ("kill", 5),
        ("proactive", 4),
        ("failure", 5),
        ("timeout", 1),
    ]
    names = [name for name, _ in operations]
    weights = [weight for _, weight in operations]
    while len(emulator.truth) < invocations:
        operation = rng.choices(names, weights)[0]
        done[operation] += 1
        if operation == "sequence":
            for _ in range(rng.randint(3, 12)):
                emulator.invoke({"sleep_s": rng.choice([0, 0, 0.01])})
        elif operation == "burst":
            count = rng.randint(2, 6)
            events: list[dict[str, Any]] = [{"sleep_s": rng.uniform(0.02, 0.15)}] * count
            emulator.invoke_many(events, concurrency=rng.randint(2, 4))
        elif operation == "pause":
            emulator.freeze_for(rng.uniform(0.05, 0.5))
        elif operation == "reap-pause":
            # longer than the idle timeout: idle environments are reaped
            emulator.freeze_for(emulator.idle_timeout_s + 0.6)
        elif operation == "kill":
            idle = [e for e in emulator.environments if e.alive and e.state == "idle"]
            if idle:
                emulator.kill(rng.choice(idle).id)
        elif operation == "proactive":
            emulator.pre_initialise(1)
            emulator.freeze_for(0.5)
        elif operation == "failure":
            emulator.invoke({"fail": True})
        elif operation == "timeout":
            emulator.invoke({"sleep_s": emulator.function.timeout_s + 1})
    return done
