"""Every data file the zoo needs at run time is declared as package data,
so that `pip install .` (not only the source tree) carries it."""

import fnmatch
import pathlib
import tomllib
import unittest

ROOT = pathlib.Path(__file__).resolve().parents[1]


class PackageDataTest(unittest.TestCase):
    def test_zoo_data_files_are_declared(self):
        declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
            "package-data"
        ]
        for path in (ROOT / "zoo").rglob("*"):
            if not path.is_file() or path.suffix in (".py", ".pyc") or "__pycache__" in path.parts:
                continue
            package_dir = next(p for p in path.parents if (p / "__init__.py").exists())
            package = ".".join(package_dir.relative_to(ROOT).parts)
            relative = path.relative_to(package_dir).as_posix()
            patterns = declared.get(package, [])
            with self.subTest(file=str(path.relative_to(ROOT))):
                self.assertTrue(
                    any(fnmatch.fnmatch(relative, pattern) for pattern in patterns),
                    f"{relative} is not in [tool.setuptools.package-data] {package!r}",
                )
