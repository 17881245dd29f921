"""The public API is annotated, so a type checker (mypy, in the lint env) can check callers.

Every parameter and the return of each public function and `Run` method
below carries an annotation; `tox -e lint` runs mypy over the modules.
"""

import inspect

import pytest

import kzoo
import kzoo.__main__
import kzoo.predict
import kzoo.weights
from kzoo.training import runner

PUBLIC = [
    kzoo.create_model, kzoo.list_models, kzoo.model_info, kzoo.register_model,
    kzoo.register_variant,
    kzoo.weights.load_weights, kzoo.weights.state_dict, kzoo.weights.export,
    kzoo.weights.list_weights, kzoo.weights.register_converter, kzoo.weights.converters,
    kzoo.weights.find_converter, kzoo.weights.sources.read_checkpoint,
    kzoo.predict.load_model, kzoo.predict.predict, kzoo.predict.predict_texts,
    kzoo.predict.metadata,
    kzoo.__main__.main, kzoo.__main__.count_parameters,
    runner.make_parser, runner.make_optimizer, runner.building, runner.given_flags,
    runner.add_weight_penalty,
] + [
    member for name, member in vars(runner.Run).items()
    if callable(member) and (not name.startswith("_") or name == "__init__")
]


def _unannotated(function):
    function = inspect.unwrap(function)
    signature = inspect.signature(function)
    missing = [name for name, p in signature.parameters.items()
               if name != "self" and p.annotation is inspect.Parameter.empty]
    if signature.return_annotation is inspect.Signature.empty:
        missing.append("return")
    return missing


@pytest.mark.parametrize("function", PUBLIC, ids=lambda f: f.__qualname__)
def test_public_function_is_annotated(function):
    assert not _unannotated(function), (function.__qualname__, _unannotated(function))


def test_an_unannotated_function_is_caught():
    def loose(model, k=5):
        return model

    def half(model: int, k=5) -> int:
        return model

    assert _unannotated(loose) == ["model", "k", "return"]
    assert _unannotated(half) == ["k"]
