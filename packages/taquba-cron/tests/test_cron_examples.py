"""The README snippet and examples/cron_example.py run."""

from __future__ import annotations

import importlib.util
import pathlib
import re
import sys
from types import ModuleType

import trio

ROOT = pathlib.Path(__file__).resolve().parents[3]


def _load(path: pathlib.Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and the codec resolve annotations through it
    spec.loader.exec_module(module)
    return module


async def test_the_example_runs() -> None:
    example = _load(ROOT / "examples" / "cron_example.py", "cron_example")
    ran = await example.live(60, stop_after=1)  # returns at the first heartbeat handled
    assert ran  # at least one heartbeat was enqueued and handled
    fired = await example.simulated_week()
    assert fired == [f"2026-10-{day}T01:30:00+01:00" for day in range(21, 26)] + [
        "2026-10-26T01:30:00+00:00",
        "2026-10-27T01:30:00+00:00",
    ]


async def test_the_readme_example_starts(tmp_path: pathlib.Path) -> None:
    readme = (ROOT / "packages" / "taquba-cron" / "README.md").read_text()
    (code,) = re.findall(r"```python\n(.*?)```", readme, flags=re.DOTALL)
    code = code.replace("file:///tmp/taquba-cron-demo", (tmp_path / "store").as_uri())
    module = ModuleType("cron_readme")
    sys.modules[module.__name__] = module  # a real module: dataclasses look their module up
    try:
        exec(compile(code, "README.md", "exec"), module.__dict__)
        with trio.move_on_after(1.5) as scope:
            await module.main()
    finally:
        del sys.modules[module.__name__]
    assert scope.cancelled_caught  # it ran until cancelled: the loops serve forever
