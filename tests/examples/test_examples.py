"""Every example runs in the local Lambda and prints what its README shows."""

from __future__ import annotations

import pytest

from tests.examples.runner import EXAMPLES, TOPICS, blocks, normalise, run

pytestmark = pytest.mark.integration


def test_every_topic_has_an_example():
    found = {p.name for p in EXAMPLES.iterdir() if p.is_dir()} - {"sam", "__pycache__"}
    assert found == set(TOPICS)
    for topic in TOPICS:
        assert list((EXAMPLES / topic).glob("*.py")), topic


@pytest.mark.parametrize("topic", TOPICS)
def test_the_readme_shows_what_the_example_prints(topic, tmp_path):
    # GIVEN the README's commands and the output it shows
    commands, shown = blocks((EXAMPLES / topic / "README.md").read_text())
    # WHEN the commands run (in the local Lambda, from the repository root)
    printed = run(commands, tmp_path)
    # THEN they print what the README shows, times and ports aside
    assert normalise(printed.replace(f"{tmp_path}/", "/tmp/")) == normalise(shown)


def test_the_normalisation_keeps_what_matters():
    a = "invocations 3, environments 1\nINIT duration: p50 12.5 ms\nstale:\n  127.0.0.1:4000 x\n"
    b = "invocations 3, environments 1\nINIT duration: p50 99.0 ms\nstale:\n  127.0.0.1:5000 x\n"
    assert normalise(a) == normalise(b)
    assert normalise(a) != normalise(a.replace("invocations 3", "invocations 4"))
