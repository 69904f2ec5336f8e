"""Opt-in: the attention maps, seen in TensorBoard through a headless browser.

Runs when KERASATTN_BROWSER_TESTS=1 or CI=true, otherwise skips. It needs
Debian's `chromium` package (`apt-get install chromium`; CI installs it in
.ci/run): outside CI a missing browser skips the test, in CI it fails it.
The screenshot is kept in KERASATTN_SCREENSHOT_DIR, or a new temporary
directory, whose path the test prints.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import keras
import numpy as np
import tensorflow as tf
from matplotlib import colormaps
from matplotlib import image as mpimage

from kerasattn.callbacks import AttentionMapCallback
from tests.test_callbacks import encoder_pooling_model
from tests.test_callbacks import probe_batch
from tests.test_callbacks import training_data

IN_CI = os.environ.get("CI") == "true"
ENABLED = IN_CI or os.environ.get("KERASATTN_BROWSER_TESTS") == "1"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
WINDOW = (1400, 1000)
IMAGE_TAGS = {
    "attention/encoder/self_attention/head_0",
    "attention/encoder/self_attention/head_1",
    "attention/pool",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def image_tags(url: str) -> set:
    """The image tags TensorBoard serves for the `attention` run."""
    with urllib.request.urlopen(f"{url}/data/plugin/images/tags", timeout=5) as response:
        return set(json.load(response).get("attention", {}))


def viridis_fraction(pixels: np.ndarray) -> float:
    """The share of pixels within 8 levels of a viridis colour."""
    lut = (colormaps["viridis"](np.linspace(0, 1, 256))[:, :3] * 255).astype(int)
    flat = pixels.reshape(-1, 3)
    coloured = flat[flat.max(1) - flat.min(1) > 30]  # viridis has no greys
    near = np.zeros(len(coloured), bool)
    for start in range(0, len(coloured), 20000):
        chunk = coloured[start : start + 20000]
        near[start : start + 20000] = (np.abs(chunk[:, None] - lut[None]).max(-1) <= 8).any(1)
    return near.sum() / len(flat)


class TensorBoardScreenshotTest(tf.test.TestCase):
    def setUp(self):
        super().setUp()
        if not ENABLED:
            self.skipTest("browser test: set KERASATTN_BROWSER_TESTS=1 (CI=true runs it)")
        if not os.access(CHROMIUM, os.X_OK):
            message = f"Expected Debian's chromium at {CHROMIUM} (apt-get install chromium)"
            if IN_CI:
                self.fail(message)
            self.skipTest(message)

    def test_images_dashboard_shows_attention_maps(self):
        out_dir = os.environ.get("KERASATTN_SCREENSHOT_DIR") or tempfile.mkdtemp(
            prefix="kerasattn-screenshot-"
        )
        os.makedirs(out_dir, exist_ok=True)
        print(f"TensorBoard screenshot and logs in {out_dir}")
        log_dir = os.path.join(out_dir, "logs")
        shutil.rmtree(log_dir, ignore_errors=True)
        screenshot = os.path.join(out_dir, "tensorboard_images.png")
        if os.path.exists(screenshot):
            os.remove(screenshot)

        keras.utils.set_random_seed(0)
        model = encoder_pooling_model()
        probe, words = probe_batch()
        tokens, labels = training_data()
        model.fit(
            tokens, labels, epochs=2, batch_size=16, verbose=0,
            callbacks=[
                keras.callbacks.TensorBoard(log_dir),
                AttentionMapCallback(probe, log_dir, max_examples=2, probe_tokens=words),
            ],
        )

        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server = subprocess.Popen(
            [sys.executable, "-m", "tensorboard.main", "--logdir", log_dir,
             "--host", "127.0.0.1", "--port", str(port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        try:
            # TensorBoard answers before it has read the event files: wait
            # (bounded) until it serves the attention images.
            deadline = time.monotonic() + 90
            while True:
                if server.poll() is not None:
                    self.fail(f"tensorboard exited: {server.stderr.read().decode()[-2000:]}")
                try:
                    if IMAGE_TAGS <= image_tags(url):
                        break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    self.fail(f"tensorboard did not serve {sorted(IMAGE_TAGS)} within 90 s")
                time.sleep(0.5)
            with tempfile.TemporaryDirectory() as profile:
                browser = subprocess.run(
                    [
                        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                        "--disable-quic", "--no-first-run", "--disable-background-networking",
                        "--disable-component-update", "--disable-sync",
                        f"--user-data-dir={profile}", f"--window-size={WINDOW[0]},{WINDOW[1]}",
                        "--virtual-time-budget=15000", f"--screenshot={screenshot}",
                        f"{url}/#images",
                    ],
                    capture_output=True, timeout=120,
                )
        finally:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()

        self.assertTrue(
            os.path.isfile(screenshot),
            f"chromium wrote no screenshot: {browser.stderr.decode()[-2000:]}",
        )
        self.assertGreater(os.path.getsize(screenshot), 20_000)
        pixels = (mpimage.imread(screenshot)[..., :3] * 255).round().astype(int)
        self.assertEqual((WINDOW[1], WINDOW[0], 3), pixels.shape)
        self.assertGreater(pixels.std(), 10.0)  # not a blank page
        # Heatmap colours cover a visible part of the page, and the hatched
        # grey of padded cells (#d4d4d4) shows.
        self.assertGreater(viridis_fraction(pixels), 0.01)
        self.assertGreater((np.abs(pixels - 212) <= 2).all(-1).sum(), 1000)
