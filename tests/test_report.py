"""memlens report: a self-contained HTML page from gradient/signature result directories."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.image as mpimg  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from memlens.cli import main  # noqa: E402
from memlens.core.errors import MemlensError  # noqa: E402
from memlens.report import build_report, load_result  # noqa: E402
from memlens.results import Result  # noqa: E402

EVIL_CLASS = "<script>alert(1)</script>"
EVIL_TOKEN = "<script>document.title='PWNED'</script>"
IMG = re.compile(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"')
# what the real results declare (GradientResult.series, signatures' accuracy series)
GRADIENT_SERIES = {"name": "memory", "title": "Sum of singular values by delay and class",
                   "x": "delay", "y": "sum_sv", "group": ["class"], "low": "ci_low",
                   "high": "ci_high", "log_y": True,
                   "caption": "How strongly the state still reacts to the input that many "
                              "steps back (larger = remembered more)."}
SIGNATURE_SERIES = {"name": "accuracy", "title": "Decoding accuracy by lag", "x": "lag",
                    "y": "accuracy", "group": ["model", "layer", "readout", "units"],
                    "low": "ci_low", "high": "ci_high",
                    "caption": "How often a decoder reading the state recovers the symbol "
                               "that many steps back; compare with the majority baseline."}


def _png(path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    fig, ax = plt.subplots(figsize=(3, 2), dpi=50)
    ax.plot(rng.normal(size=10))
    fig.savefig(path)
    plt.close(fig)


def make_gradients_dir(root: Path, name: str = "grad", arch: str = "lstm", scale: float = 1.0,
                       n_plots: int = 2) -> Path:
    d = root / name
    d.mkdir(parents=True)
    plots = []
    for i in range(n_plots):
        _png(d / f"plot{i}.png", i)
        plots.append({"file": f"plot{i}.png", "title": f"gradient plot {i} <b>bold?</b>",
                      "caption": f"caption {i}: the state reacts less & less"})
    table = []
    for cls in ("all", "NOUN", EVIL_CLASS):
        for tau in range(4):
            table.append({"delay": tau, "class": cls, "count": 100, "sum_sv": scale / (tau + 1),
                          "sv_1": 0.5 / (tau + 1), "sv_2": 0.1, "sv_3": None, "sv_4": None,
                          "sv_5": None, "ci_low": 0.1, "ci_high": 0.9})
    data = {"kind": "gradients", "memlens_version": "0.1.0",
            "model": {"path": f"/models/{arch}.pt", "arch": arch, "layers": 1, "emb": 8,
                      "hidden": 16, "unit": "word"},
            "corpus": {"path": "corpus.txt", "tokens": 1234, "sample": f"the cat {EVIL_TOKEN}"},
            "settings": {"max_delay": 3, "classes": ["NOUN", EVIL_CLASS]},
            "summary": {"sum_sv_delay0": scale, "condition_number_Z": 3.5},
            "table": table, "series": [GRADIENT_SERIES], "plots": plots}
    (d / "result.json").write_text(json.dumps(data))
    return d


def make_signatures_dir(root: Path, name: str = "sig") -> Path:
    d = root / name
    d.mkdir(parents=True)
    _png(d / "signature.png", 7)
    table = []
    for model in ("trained", "random-init control"):
        for lag in range(5):
            table.append({"model": model, "layer": 0, "readout": "hidden", "units": "all",
                          "lag": lag, "accuracy": 0.9 / (lag + 1), "ci_low": 0.1,
                          "ci_high": 0.95, "bits": 1.0 / (lag + 1), "majority": 0.2,
                          "prior": 0.1, "control_accuracy": 0.3})
    data = {"kind": "signatures", "memlens_version": "0.1.0",
            "model": {"path": "gru.pt", "arch": "gru", "layers": 1, "emb": 8, "hidden": 16,
                      "unit": "char"},
            "corpus": {"path": "held.txt", "tokens": 999},
            "settings": {"max_lag": 4}, "summary": {"accuracy_lag0": 0.9},
            "table": table, "series": [SIGNATURE_SERIES],
            "plots": [{"file": "signature.png", "title": "signature",
                       "caption": "accuracy by lag"}]}
    (d / "result.json").write_text(json.dumps(data))
    return d


def test_every_plot_embedded_and_self_contained(tmp_path):
    g = make_gradients_dir(tmp_path, n_plots=2)
    s = make_signatures_dir(tmp_path)
    out = build_report([g, s], tmp_path / "report.html")
    text = out.read_text()
    images = IMG.findall(text)
    # 3 result plots + side-by-side headline table (no overlay: one series-set per kind
    # is still compared: gradients has 3 classes, signatures has 2 models)
    assert len(images) >= 3
    for blob in images:
        import base64

        assert base64.b64decode(blob).startswith(b"\x89PNG")
    for i in range(2):
        assert f"gradient plot {i} &lt;b&gt;bold?&lt;/b&gt;" in text
        assert f"caption {i}: the state reacts less &amp; less" in text
    assert "accuracy by lag" in text
    # no network: no http(s) URL in any src/href, no script element at all
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", text)
    assert "<script" not in text.lower()
    assert "Content-Security-Policy" in text
    # model and corpus described, pivot tables present, full table in <details>
    assert "/models/lstm.pt" in text and "1234" in text
    assert "Sum of singular values by delay and class" in text
    assert "Decoding accuracy by lag" in text
    assert text.count("<details>") >= 2


def test_untrusted_text_is_escaped(tmp_path):
    g = make_gradients_dir(tmp_path)
    text = build_report([g], tmp_path / "r.html", findings=[EVIL_TOKEN]).read_text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "&lt;script&gt;document.title=&#x27;PWNED&#x27;&lt;/script&gt;" in text
    assert "<script" not in text.lower()


def test_side_by_side_comparison(tmp_path):
    a = make_gradients_dir(tmp_path, "a", "lstm", 1.0)
    b = make_gradients_dir(tmp_path, "b", "gru", 2.0)
    s1 = make_signatures_dir(tmp_path, "s1")
    s2 = make_signatures_dir(tmp_path, "s2")
    text = build_report([a, b, s1, s2], tmp_path / "r.html").read_text()
    assert "Side-by-side comparison" in text
    assert "Gradients side by side" in text and "Signatures side by side" in text
    assert "Headline numbers side by side" in text
    # 2 + 2 + 1 + 1 result plots and 2 overlays made by the report itself
    assert len(IMG.findall(text)) == 8
    # the two identical signature models get distinct labels
    assert "gru.pt [s1]" in text and "gru.pt [s2]" in text


def test_cli_report(tmp_path, capsys):
    g = make_gradients_dir(tmp_path)
    out = tmp_path / "sub" / "page.html"
    assert main(["report", str(g), "--out", str(out)]) == 0
    assert out.exists() and IMG.search(out.read_text())


class ToyResult(Result):
    """A third kind the report has never heard of: echoes of a tone per room, by distance."""

    kind = "toy"

    def __init__(self, decay: float, room: str):
        self.decay, self.room = decay, room
        self.model_meta = {"path": f"{room}.toy", "arch": "echo"}
        self.settings = {"decay": decay}

    def rows(self) -> list[dict]:
        return [{"distance_m": d, "wall": wall, "loudness_db": 90 - self.decay * d * k}
                for wall, k in (("stone", 1), ("wood <oak>", 2)) for d in range(6)]

    def series(self) -> list[dict]:
        return [{"name": "echo", "title": "Echo loudness by distance and wall",
                 "x": "distance_m", "y": "loudness_db", "group": ["wall"],
                 "xlabel": "distance (m)", "ylabel": "loudness (dB)",
                 "caption": "How loud the echo still is that many metres on."}]

    def summary(self) -> dict:
        return {"loudest_db": 90.0, "room": self.room}

    def extra(self) -> dict:
        return {"acoustics": {"title": "What the toy measured",
                              "paragraphs": [f"Echoes in the {self.room}."],
                              "items": ["Stone walls echo longest."]}}


def test_new_kind_renders_without_report_code(tmp_path):
    import memlens.report.html as report_html

    assert "toy" not in Path(report_html.__file__).read_text()
    a = ToyResult(1.0, "hall").save(tmp_path / "hall")
    b = ToyResult(3.0, "cave").save(tmp_path / "cave")
    out = tmp_path / "toy.html"
    assert main(["report", str(a), str(b), str(make_gradients_dir(tmp_path)), "--out",
                 str(out)]) == 0
    text = out.read_text()
    # the result's own sections, its PNG and its declared series as a distance x wall table
    assert "Toy: hall.toy (echo)" in text and "Toy: cave.toy (echo)" in text
    assert "What the toy measured" in text and "Stone walls echo longest." in text
    assert text.count("Echo loudness by distance and wall") >= 4  # 2 PNGs, 2 tables, overlay
    assert "How loud the echo still is that many metres on." in text
    assert "<th>distance_m</th><th>stone</th><th>wood &lt;oak&gt;</th>" in text
    assert "<td>5</td><td>85</td><td>80</td>" in text  # hall: 90 - 1 * 5 * (1, 2)
    # the overlay of both toys and their headline numbers side by side
    assert "Toy side by side: Echo loudness by distance and wall" in text
    assert "Headline numbers side by side: toy" in text
    assert len(IMG.findall(text)) == 2 + 2 + 1  # toy PNGs, gradient PNGs, one overlay
    assert "<script" not in text.lower()


class VerdictToy(ToyResult):
    """A toy that knows the answer it expected: declares a verdict (generic report feature)."""

    def figures(self, out: Path) -> list[dict]:
        made = super().figures(out)
        fig, ax = plt.subplots(figsize=(3, 2))
        ax.plot([0, 1], [1, 0])
        fig.savefig(out / "answer.png")
        plt.close(fig)
        return made + [{"file": "answer.png", "title": "The answer in one figure <i>",
                        "caption": "expected vs found"}]

    def verdict(self) -> dict:
        return {"title": "Verdict: the echo dies where expected",
                "paragraphs": ["Expected 5 m, found 5 m."],
                "table": [{"method": "loudness < 80 dB", "expected": 5, "found": 5,
                           "match": True},
                          {"method": "loudness < 60 dB", "expected": 5, "found": 9,
                           "match": False}],
                "figures": ["answer.png"],
                "findings": ["Stone walls echo for 5 m, as expected."]}


def test_verdict_leads_the_report(tmp_path):
    from memlens.results import check_verdict

    plain = ToyResult(2.0, "cave").save(tmp_path / "cave")
    toy = VerdictToy(1.0, "hall").save(tmp_path / "hall")
    text = build_report([plain, toy], tmp_path / "r.html").read_text()
    head = text.index("Verdict: the echo dies where expected")
    # the verdict comes before the table of contents and every result's own section
    assert head < text.index("<h2>Results</h2>") < text.index("Toy: cave.toy (echo)")
    verdict = text[head:text.index("</section>", head)]
    assert "<th>method</th><th>expected</th><th>found</th><th>match</th>" in verdict
    assert "<td>9</td><td>no</td>" in verdict and "<td>5</td><td>yes</td>" in verdict
    assert "The answer in one figure &lt;i&gt;" in verdict and IMG.search(verdict)
    assert "<li>Stone walls echo for 5 m, as expected.</li>" in verdict
    # its figure is shown once (not again in the result's section); the other PNGs are
    assert "The answer in one figure" not in text[text.index("</section>", head):]
    assert len(IMG.findall(text)) == 1 + 2 + 1  # verdict figure, 2 toy PNGs, one overlay
    # a malformed verdict is bad input: one line, exit 2, no page
    rj = Path(toy) / "result.json"
    data = json.loads(rj.read_text())
    for bad in ({"paragraphs": ["no title"]}, {**data["verdict"], "figures": ["nope.png"]},
                {**data["verdict"], "table": "rows"}, {**data["verdict"], "colour": 1}):
        rj.write_text(json.dumps({**data, "verdict": bad}))
        with pytest.raises(MemlensError):
            load_result(toy)
        out = tmp_path / "bad.html"
        assert main(["report", str(toy), "--out", str(out)]) == 2 and not out.exists()
    with pytest.raises(MemlensError, match="not one of the result's plots"):
        check_verdict({"title": "t", "figures": ["x.png"]}, [], "here")


@pytest.mark.parametrize("problem", ["missing", "file", "no_json", "bad_json", "not_object",
                                     "bad_kind", "missing_plot", "bad_table", "not_png",
                                     "outside"])
def test_bad_input_is_one_line_error_and_no_output(tmp_path, capsys, problem):
    good = make_gradients_dir(tmp_path, "good")
    d = tmp_path / "bad"
    if problem == "missing":
        pass
    elif problem == "file":
        d.write_text("x")
    else:
        shutil.copytree(good, d)
        rj = d / "result.json"
        data = json.loads(rj.read_text())
        if problem == "no_json":
            rj.unlink()
        elif problem == "bad_json":
            rj.write_text("{not json")
        elif problem == "not_object":
            rj.write_text("[1, 2]")
        elif problem == "bad_kind":  # any named kind renders; a missing name does not
            rj.write_text(json.dumps({**data, "kind": ""}))
        elif problem == "missing_plot":
            (d / "plot0.png").unlink()
        elif problem == "bad_table":
            rj.write_text(json.dumps({**data, "table": "rows"}))
        elif problem == "not_png":
            (d / "plot0.png").write_text("<script>alert(1)</script>")
        elif problem == "outside":
            rj.write_text(json.dumps({**data, "plots": [{"file": "../good/plot0.png"}]}))
    out = tmp_path / "report.html"
    with pytest.raises(MemlensError):
        load_result(d)
    assert main(["report", str(good), str(d), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("memlens: error:") and "\n" not in err
    assert not out.exists()


CHROMIUM = next((p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser")
                 if Path(p).exists()), None)


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}",
         *args], capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install chromium)")
def test_headless_browser_renders_and_does_not_execute(tmp_path):
    g = make_gradients_dir(tmp_path)
    s = make_signatures_dir(tmp_path)
    page = build_report([g, s], tmp_path / "report.html", title="memlens test page",
                        findings=[EVIL_TOKEN])
    shot = tmp_path / "shot.png"
    _chromium(tmp_path, f"--screenshot={shot}", "--window-size=1200,2000",
              page.resolve().as_uri())
    assert shot.exists(), "chromium wrote no screenshot"
    img = mpimg.imread(shot)
    assert img.ndim == 3 and img.shape[0] > 100
    assert float(np.ptp(img[..., :3])) > 0.1, "screenshot is blank"
    dom = _chromium(tmp_path, "--dump-dom", page.resolve().as_uri()).stdout
    assert "<title>memlens test page</title>" in dom
    assert "PWNED" not in re.search(r"<title>(.*?)</title>", dom, re.S).group(1)
    # every plot was decoded by the browser into the DOM
    assert len(re.findall(r'<img src="data:image/png;base64,', dom)) == len(
        IMG.findall(page.read_text()))
