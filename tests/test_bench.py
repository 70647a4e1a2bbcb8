"""`udpchat bench`: one quick run end to end, and the pure helpers behind its figures.

No test here asserts a timing: the quick run must complete and its JSON must be well
formed and complete (every model, scenario, placement and figure, all numbers finite).
"""

from __future__ import annotations

import importlib.util
import io
import json
import math
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from udpchat.bench import cli as bench_cli
from udpchat.bench import plot
from udpchat.bench.aggregate import FIELDS, aggregate, targets
from udpchat.bench.baseline import payload, sequence_of
from udpchat.bench.measure import (
    parse_kib_fields,
    parse_parent_pid,
    parse_pss_kib,
    placement_cpus,
    sample_tree,
)
from udpchat.bench.stats import all_finite, meets, percentile, ratio, ratios, summarize
from udpchat.bench.table import spread
from udpchat.bench.work import HashWork, hash_chain

QUICK_TIMEOUT = 50.0
"""Well under the minute CI allows; the quick run takes about 10 s on 2 idle cores."""


@pytest.fixture(scope="module")
def quick_process(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str, str]:
    """One `udpchat bench --quick`: its JSON document, its stdout and its stderr."""
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    done = subprocess.run(
        [sys.executable, "-m", "udpchat", "bench", "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=QUICK_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr}"
    assert "Targets" in done.stdout
    document: dict[str, Any] = json.loads(out.read_text())
    return document, done.stdout, done.stderr


@pytest.fixture(scope="module")
def quick_run(quick_process: tuple[dict[str, Any], str, str]) -> dict[str, Any]:
    return quick_process[0]


def _assert_summary(summary: Any, where: str) -> None:
    assert isinstance(summary, dict), f"{where} is missing"
    for key in ("median", "min", "max"):
        assert math.isfinite(summary[key]), f"{where}.{key}"
    assert summary["min"] <= summary["median"] <= summary["max"], where
    assert summary["samples"], where


@pytest.mark.timeout(QUICK_TIMEOUT + 10)
def test_quick_run_reports_every_model_scenario_placement_and_figure(
    quick_run: dict[str, Any],
) -> None:
    document = quick_run
    models = document["settings"]["models"]
    assert models == ["thread", "process", "asyncio"]
    assert document["errors"] == []
    assert all_finite(document)
    placements = document["placements"]
    assert placements[0] == "same" and set(placements) <= {"same", "split"}
    results = document["results"]
    for scenario in ("throughput", "latency"):
        for placement in placements:
            for subject in ["baseline", *models]:
                cell = results[scenario][placement][subject]
                for field in [*FIELDS[scenario], "ratio"]:
                    _assert_summary(cell[field], f"{scenario}.{placement}.{subject}.{field}")
    for subject in ["baseline", *models]:
        cell = results["cpu_bound"]["any"][subject]
        for field in [*FIELDS["cpu_bound"], "ratio"]:
            _assert_summary(cell[field], f"cpu_bound.{subject}.{field}")
        assert cell["exactly_once_in_order"] is True
    _assert_summary(results["cpu_bound"]["any"]["process"]["over_thread"], "over_thread")
    for model in models:
        assert results["throughput"]["same"][model]["exactly_once_in_order"] is True
        for scenario in ("start_line_mode", "idle_line_mode"):
            for field in FIELDS[scenario]:
                _assert_summary(results[scenario]["any"][model][field], f"{scenario}.{field}")
        for scenario in ("start_terminal_ui", "idle_terminal_ui"):
            cell = results[scenario]["any"][model]
            if cell.get("not_measured"):
                assert all(cell[field] is None for field in FIELDS[scenario])
            else:
                for field in FIELDS[scenario]:
                    _assert_summary(cell[field], f"{scenario}.{field}")


def test_quick_run_gives_each_target_a_verdict_and_runs_the_claims(
    quick_run: dict[str, Any],
) -> None:
    found = quick_run["targets"]
    assert {t["status"] for t in found} <= {"met", "missed", "not measured"}
    assert {t["model"] for t in found} == {"thread", "process", "asyncio"}
    for target in found:
        if "terminal ui" not in target["target"]:
            assert target["status"] != "not measured", target
    claims = quick_run["claims"]
    assert set(claims) >= {"gil", "switch", "io_wait", "memory", "race", "pool_queue"}
    assert quick_run["rounds"], "the raw rounds are kept"
    assert quick_run["environment"]["executable"] == sys.executable


# -- pure helpers -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "fraction", "expected"),
    [
        ([5.0], 0.5, 5.0),
        ([1.0, 2.0, 3.0, 4.0], 0.5, 2.5),
        ([4.0, 1.0, 3.0, 2.0], 0.0, 1.0),
        ([4.0, 1.0, 3.0, 2.0], 1.0, 4.0),
        ([float(v) for v in range(1, 101)], 0.99, 99.01),
        ([10.0, 20.0], 0.9, 19.0),
    ],
)
def test_percentile_interpolates_between_closest_ranks(
    values: list[float], fraction: float, expected: float
) -> None:
    assert percentile(values, fraction) == pytest.approx(expected)


def test_percentile_refuses_no_values_and_bad_fractions() -> None:
    with pytest.raises(ValueError):
        percentile([], 0.5)
    with pytest.raises(ValueError):
        percentile([1.0], 1.5)


def test_summary_holds_median_min_max_and_samples() -> None:
    assert summarize([3.0, 1.0, 2.0]) == {
        "median": 2.0,
        "min": 1.0,
        "max": 3.0,
        "samples": [3.0, 1.0, 2.0],
    }


def test_ratios_are_taken_round_by_round_and_need_a_positive_baseline() -> None:
    assert ratio(50.0, 200.0) == 0.25
    assert ratios([1.0, 3.0], [2.0, 4.0]) == [0.5, 0.75]
    for bad in (0.0, -1.0, math.nan, math.inf):
        with pytest.raises(ValueError):
            ratio(1.0, bad)
    with pytest.raises(ValueError):
        ratios([1.0], [1.0, 2.0])


def test_targets_are_met_at_the_limit_from_the_right_side() -> None:
    assert meets(0.25, 0.25, higher_is_better=True)
    assert not meets(0.24, 0.25, higher_is_better=True)
    assert meets(2.5, 2.5, higher_is_better=False)
    assert not meets(2.6, 2.5, higher_is_better=False)


def test_all_finite_rejects_nan_and_infinity_anywhere() -> None:
    assert all_finite({"a": [1, 2.5, None, "x", True], "b": {"c": 0}})
    assert not all_finite({"a": [1.0, {"b": math.nan}]})
    assert not all_finite([math.inf])


SMAPS_ROLLUP = """\
55f1e52c4000-7ffe87f53000 ---p 00000000 00:00 0                          [rollup]
Rss:                1708 kB
Pss:                 356 kB
Pss_Dirty:           112 kB
Shared_Clean:       1536 kB
Swap:                  0 kB
"""


def test_pss_is_read_from_smaps_rollup() -> None:
    assert parse_pss_kib(SMAPS_ROLLUP) == 356
    assert parse_kib_fields(SMAPS_ROLLUP)["Rss"] == 1708
    with pytest.raises(KeyError):
        parse_pss_kib("Rss: 12 kB\n")


def test_status_fields_without_a_unit_keep_their_number() -> None:
    fields = parse_kib_fields("Name:\tpython3\nThreads:\t3\nVmHWM:\t  2164 kB\n")
    assert fields == {"Threads": 3, "VmHWM": 2164}


def test_parent_pid_survives_a_command_name_with_spaces_and_parentheses() -> None:
    assert parse_parent_pid("4242 (we (ird) name) S 17 4242 4242 0 -1") == 17


def test_the_current_process_tree_can_be_sampled() -> None:
    sample = sample_tree(__import__("os").getpid())
    assert sample.processes >= 1 and sample.threads >= 1
    assert sample.cpu_ns > 0 and sample.rss_kib > 0 and sample.pss_kib > 0


def test_placements_put_the_pair_on_one_core_or_on_two() -> None:
    assert placement_cpus("same", [0, 1]) == ([0], [0])
    assert placement_cpus("split", [0, 1]) == ([0], [1])
    assert placement_cpus("split", [3]) is None


def test_payload_carries_its_sequence_number_even_after_the_work_digest() -> None:
    text = payload("T", 42, 100)
    assert len(text.encode()) == 100 and sequence_of(text) == 42
    worked = HashWork(3).outgoing(payload("C", 7, 10))
    assert sequence_of(worked) == 7
    assert worked.endswith(hash_chain(payload("C", 7, 10), 3))


def _record(scenario: str, subject: str, round_index: int, **figures: float) -> dict[str, Any]:
    return {
        "scenario": scenario,
        "placement": "same",
        "subject": subject,
        "round": round_index,
        "figures": {"exactly_once_in_order": True, **figures},
    }


def test_aggregate_compares_each_round_with_the_baseline_of_that_round() -> None:
    records = [
        _record("throughput", "baseline", 0, messages_per_s=100.0),
        _record("throughput", "baseline", 1, messages_per_s=200.0),
        _record("throughput", "thread", 0, messages_per_s=30.0),
        _record("throughput", "thread", 1, messages_per_s=20.0),
        {"scenario": "throughput", "placement": "same", "subject": "process", "round": 0}
        | {"error": "PeerError: it died"},
    ]
    results = aggregate({"records": records, "settings": {"models": ["thread", "process"]}})
    thread = results["throughput"]["same"]["thread"]
    assert thread["ratio"]["samples"] == [0.3, 0.1]
    assert thread["messages_per_s"]["median"] == 25.0
    assert thread["mb_per_s"] is None  # not in these records: present, and null
    process = results["throughput"]["same"]["process"]
    assert process["ratio"] is None and process["errors"] == ["PeerError: it died"]
    assert process["exactly_once_in_order"] is False
    found = {(t["model"], t["target"]): t for t in targets(results, ["thread", "process"])}
    assert found[("thread", "throughput, same core, x raw")]["status"] == "missed"
    assert found[("process", "throughput, same core, x raw")]["status"] == "not measured"


def test_a_single_round_is_shown_without_a_range() -> None:
    assert spread(summarize([1234.5])) == "1,234"
    assert spread(summarize([1.0, 2.0, 3.0]), 1) == "2.0 [1.0-3.0]"
    assert spread(None) == "-"


@pytest.mark.parametrize(
    "arguments",
    [["--models", "thread,fibers"], ["--messages", "0"], ["--size", "1"], ["--idle", "0"]],
)
def test_bad_options_are_one_line_and_exit_status_2(
    arguments: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert bench_cli.main(arguments) == 2
    err = capsys.readouterr().err
    assert err.startswith("udpchat bench: error: ") and err.count("\n") == 1


def test_plot_without_matplotlib_is_one_line_naming_the_readmes_install_command(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    assert bench_cli.main(["--quick", "--plot", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.endswith(f"--plot needs matplotlib; install it with: {plot.INSTALL_COMMAND}\n")
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    assert f"\n{plot.INSTALL_COMMAND} " in readme


@pytest.mark.timeout(QUICK_TIMEOUT + 10)
def test_the_quick_run_shows_progress_and_speaks_to_the_projects_users(
    quick_process: tuple[dict[str, Any], str, str],
) -> None:
    _, stdout, stderr = quick_process
    step = re.compile(r"^udpchat bench: \d+/\d+ \d+:\d\d ", re.MULTILINE)
    steps = step.findall(stderr)
    assert len(steps) >= 5 and "round 1/1" in stderr  # stderr is a pipe here: one per step
    assert not step.search(stdout)  # the table stays clean
    for word in ("issue", "item 5", "study notes", "seed-notes"):
        assert word not in stdout.lower()
    assert "Claims about threads, processes and coroutines" in stdout
    assert "  only processes run Python code in parallel (the GIL): " in stdout


def test_the_progress_bar_redraws_one_line_on_a_terminal() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    screen = Terminal()
    progress = bench_cli.ProgressBar(2, screen)
    progress("round 1/1: thread, same core")
    progress("round 1/1: thread, split cores")
    progress.finish()
    assert screen.getvalue().endswith("\r") and "\n" not in screen.getvalue()
    assert "[----------" in screen.getvalue() and "1/2" in screen.getvalue()


def test_the_models_page_and_the_readme_speak_only_of_the_project() -> None:
    root = Path(__file__).resolve().parent.parent
    for page in ("docs/models.md", "README.md"):
        text = (root / page).read_text(encoding="utf-8")
        for word in ("issue", "study notes", "seed-notes", "../shared"):
            assert word not in text, f"{page} mentions {word!r}"


def test_cpu_work_goes_into_the_core_so_each_model_runs_it_in_its_workers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from udpchat.bench import peer

    seen: dict[str, Any] = {}

    def create_runtime(model: str, nick: str, **options: Any) -> object:
        seen.update(options)
        return object()

    monkeypatch.setattr(peer, "create_runtime", create_runtime)
    endpoint = peer.ChatEndpoint("thread", HashWork(5))
    assert seen["config"].transform == HashWork(5)
    assert endpoint.work_runs_in == "runtime"
    seen.clear()
    assert peer.ChatEndpoint("thread", None).work_runs_in == "nowhere"
    assert seen["config"].transform is None


def test_presence_scenario_measures_a_small_lan() -> None:
    from udpchat.bench.presence import measure, render

    row = measure(5, window=10)
    assert row["chats"] == 5 and row["converged_s"] < 0.1
    # One announcement a minute (±10 %), to two addresses, 64 bytes each; nothing else.
    assert 1.6 <= row["datagrams_per_chat_minute"] <= 2.4
    assert row["bytes_per_chat_minute"] == round(64 * row["datagrams_per_chat_minute"])
    assert 0 < row["message_to_all_ms"] < 5
    assert "| 5 | 0% |" in render([row])


@pytest.mark.parametrize(
    "args", [["--chats", "1"], ["--loss", "2"], ["--window", "x"], ["--bogus"]]
)
def test_presence_usage_errors_are_one_line(
    args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    from udpchat.bench.presence import main

    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("udpchat bench presence: error:") and err.count("\n") == 1
