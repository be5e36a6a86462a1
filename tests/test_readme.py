"""The README's own-network example runs as written."""

import math
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_own_network_example_runs_and_prints_a_barcode(capsys):
    section = README.read_text().split("## Use it on your own network", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)
    bars = namespace["bars"]
    assert len(bars) == 4 and sum(math.isinf(d) for _, d in bars) == 1  # one infinite bar: the lowest minimum
    assert all(death >= birth for birth, death in bars)
    assert "inf" in capsys.readouterr().out
