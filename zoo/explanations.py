"""What `zoo explain` and `zoo faithfulness` share across models.

Rendering token scores for a person (a bar-marked line for the terminal, a
self-contained HTML heatmap), a progress bar on the console, and the
faithfulness table. The explanations and their measures come from
`kerasattn.explain`; each model's recipe says what its inputs and outputs
are.
"""

from __future__ import annotations

import html
import math
import sys
import time
from typing import Optional, Sequence, TextIO

from kerasattn._files import write_atomically

# Eighth blocks: a token's bar, from a sliver to a full cell.
BARS = "▁▂▃▄▅▆▇█"


def bar_line(tokens: Sequence[str], scores: Sequence[float]) -> str:
    """Tokens in order, each followed by a bar as high as its |score| / max |score|.

    A negative score (evidence against the output) gets a `-` before its
    bar. Example: `gorgeous█ ,▂ witty▇`.
    """
    largest = max((abs(s) for s in scores), default=0.0) or 1.0
    marks = []
    for token, score in zip(tokens, scores):
        level = min(len(BARS) - 1, int(abs(score) / largest * (len(BARS) - 1) + 0.5))
        marks.append(f"{token}{'-' if score < 0 else ''}{BARS[level]}")
    return " ".join(marks)


def _cell_colour(score: float, largest: float) -> str:
    strength = 0.0 if largest <= 0 else min(1.0, abs(score) / largest)
    # Red for evidence for the output, blue against it.
    rgb = "214, 39, 40" if score >= 0 else "31, 119, 180"
    return f"rgba({rgb}, {0.85 * strength:.3f})"


def html_heatmap(title: str, rows: Sequence[dict]) -> str:
    """A self-contained HTML page: one heading and one shaded line per row.

    Args:
        title: the page title.
        rows: `{"heading": str, "tokens": [str], "scores": [float]}` each;
            a token's background is red for a positive score, blue for a
            negative one, as strong as |score| / the row's max |score|; its
            score shows on hover.
    """
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:60em}"
        "span.t{padding:0.15em 0.2em;margin:0 0.1em;border-radius:0.2em;line-height:2.2}"
        "h2{font-size:1em;font-weight:normal;color:#444}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    for row in rows:
        largest = max((abs(s) for s in row["scores"]), default=0.0)
        cells = "".join(
            f'<span class="t" style="background:{_cell_colour(s, largest)}" '
            f'title="{s:.4f}">{html.escape(t)}</span>'
            for t, s in zip(row["tokens"], row["scores"])
        )
        parts.append(f"<h2>{html.escape(row['heading'])}</h2><p>{cells}</p>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_html(path: str, page: str) -> None:
    """Writes `page` to `path` through a temporary file and a rename."""

    def write(temporary: str) -> None:
        with open(temporary, "w", encoding="utf-8") as file:
            file.write(page)

    write_atomically(path, write, suffix=".html")


class Progress:
    """A one-line progress bar on the console (stderr), redrawn in place.

    Drawn only when stderr is a terminal, so `--json` output and log files
    stay clean.

    Args:
        total: the number of steps.
        stream: where to draw; defaults to `sys.stderr`.
    """

    def __init__(self, total: int, stream: Optional[TextIO] = None):
        self.total = max(1, total)
        self.done = 0
        self.stream = sys.stderr if stream is None else stream
        self.start = time.monotonic()
        try:
            self.visible = self.stream.isatty()
        except (AttributeError, ValueError):
            self.visible = False

    def step(self, label: str) -> None:
        """Counts one step done and redraws the bar with `label`."""
        self.done = min(self.total, self.done + 1)
        if not self.visible:
            return
        width = 30
        filled = int(width * self.done / self.total)
        elapsed = time.monotonic() - self.start
        self.stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} "
                          f"{elapsed:4.0f} s  {label[:40]:<40}")
        if self.done == self.total:
            self.stream.write("\n")
        self.stream.flush()


def check_methods(methods: Sequence[str], measured: Sequence[str]) -> None:
    """Raises a one-line `ValueError` unless `methods` is a non-empty choice from `measured`."""
    unknown = [m for m in methods if m not in measured]
    if unknown or not methods:
        raise ValueError(f"expected methods among {', '.join(measured)}, "
                         f"received: {', '.join(unknown) or 'none'}")


def removal_summary(removed, kept) -> dict:
    """ERASER's numbers from `(examples, K)` drops of the explained output on
    removing the top 1..K inputs (`removed`) and on keeping only them (`kept`).

    Returns:
        `{"comprehensiveness", "sufficiency"` (means at K), `"aopc"` (the mean
        of removed - kept over 1..K), `"interval", "sufficiency_interval"`
        (95 % bootstrap intervals at K), `"by_k": {"1": {"comprehensiveness",
        "sufficiency"}, ...}}`.
    """
    from kerasattn.explain import faithfulness

    return {
        "comprehensiveness": float(removed[:, -1].mean()),
        "sufficiency": float(kept[:, -1].mean()),
        "aopc": float((removed - kept).mean()),
        "interval": faithfulness.bootstrap_interval(removed[:, -1]),
        "sufficiency_interval": faithfulness.bootstrap_interval(kept[:, -1]),
        "by_k": {str(k + 1): {"comprehensiveness": float(removed[:, k].mean()),
                              "sufficiency": float(kept[:, k].mean())}
                 for k in range(removed.shape[1])},
    }


def random_ratio(row: dict, random_row: dict) -> float:
    """A method's comprehensiveness over the random baseline's (NaN if that is not > 0)."""
    denominator = random_row["comprehensiveness"]
    return row["comprehensiveness"] / denominator if denominator > 0 else math.nan


def sanity_fields(check: dict) -> dict:
    """A `faithfulness.sanity_check` result as a report's `sanity_*` fields (JSON-safe)."""
    return {"sanity_spearman": None if math.isnan(check["spearman"]) else check["spearman"],
            "sanity_cascade": check["cascade"]}


def _with_interval(value: float, interval: Sequence[float]) -> str:
    return f"{value:6.3f} [{interval[0]:6.3f}, {interval[1]:6.3f}]"


def faithfulness_table(report: dict, strategy: str, description: str) -> str:
    """One removal strategy's methods x measures as aligned text.

    Args:
        report: what a recipe's `faithfulness` returns.
        strategy: a key of `report["by_removal"]`.
        description: the strategy in words, for the heading.
    """
    section = report["by_removal"][strategy]
    lines = [f"tokens {description}: comprehensiveness and sufficiency are AOPCs over the "
             f"top {', '.join(str(b) for b in report['bins'])} % (95 % bootstrap intervals)",
             f"  {'method':<22} {'comprehensiveness':<27} {'sufficiency':<27} "
             f"{'comp-suff':>9} {'sanity rho':>10}"]
    rows = [(name, values, report["methods"][name].get("sanity_spearman"))
            for name, values in section["methods"].items()]
    rows.append((f"random ({report['random_seeds']} seeds)", section["random"], None))
    for name, values, sanity in rows:
        shown = "" if sanity is None or math.isnan(sanity) else f"{sanity:10.2f}"
        lines.append(
            f"  {name:<22} {_with_interval(values['comprehensiveness'], values['interval']):<27} "
            f"{_with_interval(values['sufficiency'], values['sufficiency_interval']):<27} "
            f"{values['aopc']:9.3f} {shown:>10}"
        )
    return "\n".join(lines)
