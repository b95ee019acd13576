"""data.progress: redrawn bars on a terminal, whole throttled lines in a log."""

from __future__ import annotations

import io

import pytest
from tqdm import tqdm

from data import progress as progress_mod
from data.progress import LineProgress, progress_bar, terminal_bars


@pytest.fixture
def log_mode(monkeypatch):
    monkeypatch.setattr(progress_mod, "stderr_is_terminal", lambda: False)


def test_log_mode_writes_one_final_line_per_finished_bar(log_mode, monkeypatch):
    monkeypatch.setenv("PROGRESS_INTERVAL_S", "1000")  # no periodic line can fall due
    out = io.StringIO()
    for _ in progress_bar(range(7), desc="tokenise", unit="motion", file=out):
        pass
    text = out.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("tokenise: 100%")
    assert "7/7" in lines[0]


def test_log_mode_postfix_and_description_write_no_line(log_mode, monkeypatch):
    # tqdm's set_postfix/set_description redraw by default: in a log that was a line per call
    monkeypatch.setenv("PROGRESS_INTERVAL_S", "1000")
    out = io.StringIO()
    bar = progress_bar(total=50, desc="train", file=out)
    for i in range(50):
        bar.update(1)
        bar.set_postfix(loss=f"{1.0 / (i + 1):.3f}")
        bar.set_description(f"train {i}")
    bar.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    assert "50/50" in lines[0] and "loss=0.020" in lines[0]


def test_log_mode_inner_bars_stay_silent(log_mode, monkeypatch):
    monkeypatch.setenv("PROGRESS_INTERVAL_S", "1000")
    out = io.StringIO()
    for _ in progress_bar(range(3), desc="epoch", leave=False, file=out):
        pass
    bar = progress_bar(total=4, desc="load", leave=False, file=out)
    bar.update(4)
    bar.close()
    assert out.getvalue() == ""


def test_log_mode_interval_zero_gives_a_line_per_update(log_mode, monkeypatch):
    monkeypatch.setenv("PROGRESS_INTERVAL_S", "0")
    out = io.StringIO()
    bar = progress_bar(total=3, desc="render", file=out)
    assert isinstance(bar, LineProgress)
    for _ in range(3):
        bar.update(1)
    bar.close()
    lines = out.getvalue().splitlines()
    # no delay at interval 0: the start, one per update and the final line at close
    assert [line.split("|")[-1].split()[0] for line in lines] == ["0/3", "1/3", "2/3", "3/3", "3/3"]


def test_terminal_and_disabled_bars_are_plain_tqdm(monkeypatch):
    monkeypatch.setattr(progress_mod, "stderr_is_terminal", lambda: True)
    bar = progress_bar(range(2), file=io.StringIO())
    assert type(bar) is tqdm
    bar.close()
    assert terminal_bars(True)
    assert not terminal_bars(False)
    monkeypatch.setattr(progress_mod, "stderr_is_terminal", lambda: False)
    out = io.StringIO()
    assert type(progress_bar(range(2), disable=True, file=out)) is tqdm
    assert not terminal_bars(True)


def test_bad_interval_names_the_variable(log_mode, monkeypatch):
    monkeypatch.setenv("PROGRESS_INTERVAL_S", "soon")
    with pytest.raises(ValueError, match="PROGRESS_INTERVAL_S='soon'"):
        progress_bar(range(2), file=io.StringIO())
