"""The docstring examples of `kerasattn.layers` and `kerasattn.ops` run.

Every module of the two packages is run through `doctest`, with `keras`,
`np` and the packages' public names in scope, as a user who wrote
`from kerasattn.layers import *` would have them.
"""

from __future__ import annotations

import doctest
import importlib
import inspect
import io
import pkgutil

import keras
import numpy as np

import kerasattn.layers
import kerasattn.ops
from tests import harness

PACKAGES = (kerasattn.layers, kerasattn.ops)


def _modules():
    for package in PACKAGES:
        yield package
        for info in pkgutil.iter_modules(package.__path__, package.__name__ + "."):
            yield importlib.import_module(info.name)


def _globals() -> dict:
    names = {"keras": keras, "np": np, "kerasattn": importlib.import_module("kerasattn")}
    for package in PACKAGES:
        names.update({name: getattr(package, name) for name in package.__all__})
    return names


class DocstringExamplesTest(harness.LayerTestCase):
    def run_doctests(self, module) -> doctest.TestResults:
        finder = doctest.DocTestFinder(exclude_empty=True)
        runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
        report = io.StringIO()
        for test in finder.find(module, module.__name__, globs=_globals()):
            runner.run(test, out=report.write)
        results = runner.summarize(verbose=False)
        self.assertEqual(0, results.failed, f"{module.__name__}:\n{report.getvalue()}")
        return results

    def test_examples_run(self):
        attempted = 0
        for module in _modules():
            with self.subTest(module=module.__name__):
                attempted += self.run_doctests(module).attempted
        self.assertGreater(attempted, 0)

    def test_every_layer_has_an_example(self):
        # A layer whose example is a plain code block (not `>>>`) would be
        # skipped silently above.
        for name in kerasattn.layers.__all__:
            layer = getattr(kerasattn.layers, name)
            with self.subTest(layer=name):
                doc = inspect.getdoc(layer)
                for section in ("Args:", "Call arguments:", "Returns:", "Example:"):
                    self.assertIn(section, doc)
                examples = doctest.DocTestParser().get_examples(doc)
                self.assertNotEqual([], examples, f"{name} has no runnable example")

    def test_a_failing_example_fails(self):
        def broken():
            """
            >>> 1 + 1
            3
            """

        finder = doctest.DocTestFinder()
        runner = doctest.DocTestRunner()
        for test in finder.find(broken, "broken", globs={}):
            runner.run(test, out=lambda _: None)
        self.assertEqual(1, runner.summarize(verbose=False).failed)
