"""Only what pyproject.toml cannot say: the released models go into the wheel.

``models/`` at the repository root is their one copy in the clone (``skullrecon release`` writes there,
``skullrecon models`` reads there in a clone or an editable install). A built wheel carries a copy of
every release (``<name>.pt``, ``.json``, ``.md``) as ``skullrecon/released_models/``, which
:func:`skullrecon.release.models_dir` uses when the package is installed from it. An editable install
copies nothing. A wheel built without them is an error: it is the bug this file exists to prevent.
"""

import json
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

MODELS = Path(__file__).resolve().parent / "models"


class build_py_with_models(build_py):  # noqa: N801 - setuptools' command naming
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        cards = sorted(MODELS.glob("*.json"))
        if not cards:
            raise SystemExit(f"{MODELS}: no released models to put into the wheel (expected <name>.pt/.json/.md)")
        out = Path(self.build_lib) / "skullrecon" / "released_models"
        out.mkdir(parents=True, exist_ok=True)
        for card in cards:
            # the files a card names: its network, a two-stage release's second stage or shape model (shared)
            named = json.loads(card.read_text())
            files = [named["file"]] + ([named["refiner"]["file"]] if named.get("refiner") else [])
            files += [named["surface"]["shape_model"]["file"]] if named.get("surface", {}).get("shape_model") else []
            for path in (card, card.with_suffix(".md"), *(MODELS / f for f in files)):
                shutil.copyfile(path, out / path.name)
        shutil.copyfile(MODELS / "README.md", out / "README.md")


setup(cmdclass={"build_py": build_py_with_models})
