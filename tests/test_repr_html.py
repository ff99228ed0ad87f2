"""Result._repr_html_ (Jupyter's view of a result): the kind, the headline numbers, the first
rows, the trust warnings; escaped, rounded, missing values as "-"; the same for a result read
back from disk."""

from __future__ import annotations

import math

from memlens.results import Result, load_result
from memlens.runtime.html import MAX_ROWS, warnings_of


class Toy(Result):
    kind = "toy"

    def __init__(self, n=3, flags="none", messages=()):
        self.n, self.flags, self.messages = n, flags, list(messages)

    def rows(self):
        return [{"lag": i, "accuracy": 1 / (i + 1), "name": "<b>&", "ci": math.nan}
                for i in range(self.n)]

    def summary(self):
        return {"memory_span": 2, "bits": math.pi, "stability_flags": self.flags,
                "nested": {"a": 1}}

    def trust_messages(self):
        return self.messages


def test_table_of_summary_and_rows_escaped_and_rounded():
    html = Toy()._repr_html_()
    assert html.startswith("<div") and html.endswith("</div>")
    assert "memlens toy result" in html and "(3 rows)" in html
    assert "<td>memory_span</td><td>2</td>" in html and "<td>3.142</td>" in html
    assert "&lt;b&gt;&amp;" in html and "<b>&" not in html          # text is escaped
    assert "<td>-</td>" in html and "nan" not in html.lower()       # missing, not nan
    assert "nested" not in html and "warning" not in html           # no flags: no warning
    assert html.count("<table>") == 2


def test_long_tables_are_cut_and_warnings_shown():
    r = Toy(n=MAX_ROWS + 5, flags="exploding", messages=["the control decodes better"])
    html = r._repr_html_()
    assert html.count("<tr>") == 1 + 3 + 1 + MAX_ROWS  # header, 3 summary rows, header, rows
    assert "5 more rows" in html and "to_frame()" in html
    assert warnings_of(r) == ["the control decodes better", "stability_flags: exploding"]
    assert html.count("warning:") == 2


def test_saved_result_shows_the_same_table(tmp_path):
    r = Toy()
    r.save(tmp_path / "toy")
    back = load_result(tmp_path / "toy")
    assert "memlens toy result" in back._repr_html_()
    assert "<td>memory_span</td><td>2</td>" in back._repr_html_()
