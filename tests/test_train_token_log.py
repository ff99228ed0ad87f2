"""``memlens train`` logs how many training tokens it used (``--max-tokens`` cuts; issue 24's
matched-token experiment 10 checks the counts from the log)."""

from __future__ import annotations

from memlens.training import TrainConfig, train

TEXT = "\n".join(" ".join(f"w{(i * 5 + j) % 11}" for j in range(6)) for i in range(60)) + "\n"


def run(tmp_path, **kw) -> list[str]:
    path = tmp_path / "train.txt"
    path.write_text(TEXT)
    lines: list[str] = []
    cfg = dict(train=str(path), out=str(tmp_path / "m.pt"), emb=4, hidden=8, epochs=1,
               bptt=5, batch=2, progress=False, **kw)
    train(TrainConfig(**cfg), log=lines.append)
    return [s for s in lines if s.startswith("training tokens:")]


def test_logs_the_capped_count(tmp_path):
    # 60 lines of 6 words, each with a sentence end: 420 tokens
    assert run(tmp_path, max_tokens=100) == ["training tokens: 100 of 420"]


def test_logs_all_tokens_without_a_cap(tmp_path):
    assert run(tmp_path) == ["training tokens: 420 of 420"]
