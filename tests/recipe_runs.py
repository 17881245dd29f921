"""Load a recipe script as a module and run its smoke run, for the recipes' tests."""

import importlib.util
from pathlib import Path

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def load_recipe(name):
    """`recipes/<name>.py` as a module (its `main` and helpers), without running it as a script."""
    spec = importlib.util.spec_from_file_location(f"{name}_recipe", RECIPES / f"{name}.py")
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    return recipe


def smoke_run(name, output_dir, *flags):
    """Run `recipes/<name>.py --smoke --verbose 0 --output-dir DIR FLAGS`; return its metrics."""
    return load_recipe(name).main(
        ["--smoke", "--verbose", "0", "--output-dir", str(output_dir), *flags])
