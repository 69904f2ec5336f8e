"""The quiet console of `python -m zoo`: TensorFlow's start-up logging, fit's verbosity."""

import io
import os
import re
import subprocess
import sys
import tempfile
import unittest

from zoo import console

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A log line's header (severity, date, time, thread, file:line), which changes from run to run.
HEADER = re.compile(r"^[IWEF]\d{4} [\d:.]+\s+\d+ ")


def environment(**variables):
    """The test run's environment without the variables the console reads, plus `variables`."""
    kept = {key: value for key, value in os.environ.items()
            if key not in ("TF_CPP_MIN_LOG_LEVEL", console.LOG_VARIABLE)}
    return {**kept, **variables}


def run(argv, **variables):
    return subprocess.run(argv, capture_output=True, text=True, cwd=REPO, timeout=300,
                          env=environment(**variables))


def messages(stderr: str) -> set:
    return {HEADER.sub("", line) for line in stderr.splitlines()}


class StartUpLoggingTest(unittest.TestCase):
    def test_silenced_whatever_tf_cpp_min_log_level_says_unless_zoo_log(self):
        # What TensorFlow alone prints as it loads with TF_CPP_MIN_LOG_LEVEL=3: absl's
        # lines from before its InitializeLog, once per shared library that logs.
        plain = run([sys.executable, "-c", "import tensorflow"], TF_CPP_MIN_LOG_LEVEL="3")
        self.assertEqual(0, plain.returncode, plain.stderr)
        for level in ("3", "0"):
            quiet = run([sys.executable, "-m", "zoo", "presets"], TF_CPP_MIN_LOG_LEVEL=level)
            self.assertEqual(0, quiet.returncode, quiet.stderr)
            self.assertEqual("", quiet.stderr, f"TF_CPP_MIN_LOG_LEVEL={level}")
            self.assertIn("attention-transformer", quiet.stdout)
        # ZOO_LOG=1: TensorFlow's logging as without the tool.
        logged = run([sys.executable, "-m", "zoo", "presets"], TF_CPP_MIN_LOG_LEVEL="3",
                     ZOO_LOG="1")
        self.assertEqual(0, logged.returncode, logged.stderr)
        self.assertLessEqual(messages(plain.stderr), messages(logged.stderr), logged.stderr)

    def test_native_logging_silenced_follows_zoo_log(self):
        script = ("import os; from zoo import console\n"
                  "with console.native_logging_silenced():\n"
                  "    os.write(2, b'native line\\n')\n"
                  "os.write(2, b'after\\n')\n")
        for value, expected in (("", "after\n"), ("0", "after\n"),
                                ("1", "native line\nafter\n"), ("yes", "native line\nafter\n")):
            result = run([sys.executable, "-c", script], ZOO_LOG=value)
            self.assertEqual(0, result.returncode, result.stderr)
            self.assertEqual(expected, result.stderr, f"ZOO_LOG={value!r}")


class FitVerbosityTest(unittest.TestCase):
    def test_default_by_where_output_goes(self):
        class Terminal(io.StringIO):
            def isatty(self):
                return True

        self.assertEqual(1, console.fit_verbosity(None, Terminal()))
        self.assertEqual(1, console.fit_verbosity("auto", Terminal()))
        self.assertEqual(2, console.fit_verbosity(None, io.StringIO()))
        with tempfile.TemporaryFile("w") as file:
            self.assertEqual(2, console.fit_verbosity(None, file))
        closed = io.StringIO()
        closed.close()
        self.assertEqual(2, console.fit_verbosity(None, closed))
        self.assertEqual(2, console.fit_verbosity(None, object()))

    def test_what_the_user_asked_for_is_kept(self):
        for verbose in (0, 1, 2):
            self.assertEqual(verbose, console.fit_verbosity(verbose, io.StringIO()))

        class Terminal(io.StringIO):
            def isatty(self):
                return True

        self.assertEqual(2, console.fit_verbosity(2, Terminal()))
        for bad in (3, -1, True, "1"):
            with self.assertRaisesRegex(ValueError, "expected --verbose 0, 1 or 2"):
                console.fit_verbosity(bad)

    def test_reads_sys_stdout(self):
        # Under pytest sys.stdout is captured (not a terminal): one line per epoch.
        stdout = sys.stdout
        try:
            sys.stdout = io.StringIO()
            self.assertEqual(2, console.fit_verbosity())
        finally:
            sys.stdout = stdout


if __name__ == "__main__":
    unittest.main()
