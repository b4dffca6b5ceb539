"""`cvserve bench efficiency` in rounds: on scripted measurements (no server: the stages alone
and the served rates are scripted per round), then one short real run on a real Triton."""

from __future__ import annotations

import contextlib
import json
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

from cvserve.pipelines.app.cli import build_parser
from cvserve.pipelines.catalog import classify
from cvserve.profiling.bench import efficiency
from cvserve.profiling.bench.efficiency import ALONE, SERVED, Rate, bench_efficiency

# With 2 cores and 10 + 20 + 2 CPU ms per image (preprocessing, DNN, client) the limit is
# 2 / 0.032 = 62.5 img/s, whatever the round: served = ratio x 62.5.
CORES, LIMIT = 2, 62.5
PRE, DNN = Rate(100.0, 0.010), Rate(50.0, 0.020)
CLIENT_CPU_S = 0.002


class Script:
    """Scripted meters for `bench_efficiency`: each measurement is logged in the order it is
    taken; served / limit of round r is ``ratios[r]``, the baseline serves at half the rate."""

    def __init__(self, ratios: list[float]) -> None:
        self.ratios = ratios
        self.log: list[tuple[str, ...]] = []

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(efficiency, "usable_cores", lambda: CORES)
        monkeypatch.setattr(efficiency, "preprocess_meter", self.preprocess_meter)
        monkeypatch.setattr(efficiency, "dnn_meter", self.dnn_meter)
        monkeypatch.setattr(efficiency, "served_meter", self.served_meter)
        monkeypatch.setattr(efficiency, "serve_locally", self.serve_locally)

    def preprocess_meter(self, spec, batch):
        def measure(images, duration_s):
            self.log.append(("pre", f"{len(images)} images"))
            return PRE

        return measure

    def dnn_meter(self, spec, batch):
        who = "baseline" if spec.name.endswith("_baseline") else "pipeline"

        def measure(duration_s):
            self.log.append(("dnn", who))
            return DNN

        return measure

    def served_meter(self, url, spec, images, concurrency, server_pid=None):
        who = "baseline" if spec.name.endswith("_baseline") else "pipeline"
        served = [r * LIMIT for r in self.ratios]
        calls = iter(range(len(served)))

        def measure(duration_s):
            self.log.append(("served", who))
            rate = served[next(calls)] / (2.0 if who == "baseline" else 1.0)
            return Rate(rate, CLIENT_CPU_S), {"tritonserver": 1.0}

        return measure

    @contextlib.contextmanager
    def serve_locally(self, specs) -> Iterator[types.SimpleNamespace]:
        self.log.append(("server starts", *(s.name for s in specs)))
        yield types.SimpleNamespace(grpc_url="127.0.0.1:1", process=None)
        self.log.append(("server stops",))

    def rounds(self) -> list[list[str]]:
        """The log cut into rounds: what kind of measurement each round took, in order."""
        body = [entry[0] for entry in self.log[1:-1]]
        per_round = len(body) // len(self.ratios)
        return [body[i : i + per_round] for i in range(0, len(body), per_round)]


SPEC = classify("mobilenet_v3_small", max_batch_size=2, engine="torch")
BASELINE = classify("mobilenet_v3_small", max_batch_size=2, engine="onnxruntime", name="c_baseline")


def test_rounds_alternate_and_the_server_starts_once(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    script = Script([0.95, 0.96, 0.94, 0.97])
    script.install(monkeypatch)
    report = bench_efficiency(SPEC, sizes=[(64, 48)], rounds=4, out=tmp_path / "e.json")
    assert script.log[0][0] == "server starts" and script.log[-1] == ("server stops",)
    assert sum(entry[0] == "server starts" for entry in script.log) == 1
    served_first = ["served", "pre", "dnn"]
    alone_first = ["pre", "dnn", "served"]
    assert script.rounds() == [served_first, alone_first, served_first, alone_first]
    (row,) = report["results"]
    assert [r["order"] for r in row["rounds"]] == [[SERVED, ALONE], [ALONE, SERVED]] * 2
    assert [r["round"] for r in row["rounds"]] == [1, 2, 3, 4]


def test_a_noisy_round_does_not_move_the_median_and_every_round_is_kept(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    Script([0.95, 0.96, 0.50, 0.97, 0.95]).install(monkeypatch)
    out = tmp_path / "e.json"
    report = bench_efficiency(SPEC, sizes=[(64, 48)], rounds=5, out=out)
    (row,) = json.loads(out.read_text())["results"]
    assert row == report["results"][0]
    assert (report["rounds"], report["target"]) == (5, 0.9)
    assert [r["ratio"] for r in row["rounds"]] == pytest.approx([0.95, 0.96, 0.50, 0.97, 0.95])
    for r in row["rounds"]:  # each round is complete: its limit from its own CPU-seconds
        assert r["limit"] == pytest.approx(LIMIT)
        assert r["ratio"] == pytest.approx(r["served"] / r["limit"])
    assert row["ratio"] == pytest.approx(0.95)  # the median: round 3 did not move it
    assert row["served"] == pytest.approx(0.95 * LIMIT)
    assert row["ratio_spread"] == pytest.approx(
        {"median": 0.95, "min": 0.50, "max": 0.97, "rounds": 5}
    )
    # Its spread (0.47) is wider than its distance to 0.9 (0.05): a line of its own says so.
    assert row["ratio_verdict"]["outcome"] == "undecided"
    printed = capsys.readouterr().out
    (line,) = [line for line in printed.splitlines() if "UNDECIDED" in line]
    assert line.startswith("64x48 served / limit: median 0.95 of 5 rounds [0.50-0.97]")
    assert "5 rounds" in printed and "0.95 [0.50-0.97]" in printed  # the table says both


def test_quiet_rounds_pass_or_fail_the_target_without_an_undecided_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    Script([0.95, 0.96, 0.94]).install(monkeypatch)
    report = bench_efficiency(SPEC, sizes=[(64, 48)], rounds=3, out=tmp_path / "e.json")
    assert report["results"][0]["ratio_verdict"]["outcome"] == "met"
    assert "UNDECIDED" not in capsys.readouterr().out
    Script([0.95, 0.96, 0.94]).install(monkeypatch)
    report = bench_efficiency(SPEC, sizes=[(64, 48)], rounds=3, out=tmp_path / "e.json", target=1.1)
    assert report["results"][0]["ratio_verdict"]["outcome"] == "not met"
    Script([0.95, 0.96, 0.94]).install(monkeypatch)
    report = bench_efficiency(
        SPEC, sizes=[(64, 48)], rounds=3, out=tmp_path / "e.json", target=None
    )
    assert "ratio_verdict" not in report["results"][0]


def test_the_baseline_is_measured_in_the_same_rounds_alternating_with_the_pipeline(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    script = Script([0.95, 0.80, 0.96])
    script.install(monkeypatch)
    report = bench_efficiency(
        SPEC, sizes=[(64, 48)], rounds=3, out=tmp_path / "e.json", baseline=BASELINE
    )
    assert script.log[0] == ("server starts", "classify", "c_baseline")
    whos = [entry[1] for entry in script.log if entry[0] in ("dnn", "served")]
    assert whos == [
        *("pipeline", "baseline", "pipeline", "baseline"),  # round 1: served, then alone
        *("baseline", "pipeline", "baseline", "pipeline"),  # round 2: alone, then served
        *("pipeline", "baseline", "pipeline", "baseline"),
    ]
    (row,) = report["results"]
    # The baseline serves at half the rate in every round: the speedup is 2 in each.
    assert [r["served_speedup"] for r in row["rounds"]] == pytest.approx([2.0, 2.0, 2.0])
    assert row["served_speedup"] == pytest.approx(2.0)
    assert row["served_speedup_spread"]["min"] == pytest.approx(2.0)
    assert row["served_speedup_verdict"]["outcome"] == "met"
    assert row["baseline"]["served"] == pytest.approx(0.95 * LIMIT / 2)


def test_cli_defaults_are_the_benchmarks_own() -> None:
    from cvserve.profiling.bench import engines, loadgen

    args = build_parser().parse_args(["bench", "efficiency", "--pipeline", "classify"])
    assert (args.rounds, args.duration, args.ratio_target) == (
        efficiency.DEFAULT_ROUNDS,
        efficiency.DEFAULT_DURATION_S,
        efficiency.TARGET,
    )
    assert args.target == "efficiency"  # the subcommand keeps its own `target`
    args = build_parser().parse_args(["bench", "engines"])
    assert (args.rounds, args.duration) == (engines.DEFAULT_ROUNDS, engines.DEFAULT_DURATION_S)
    assert build_parser().parse_args(["bench", "loadgen"]).rounds == loadgen.DEFAULT_ROUNDS
    with pytest.raises(SystemExit):
        build_parser().parse_args(["bench", "efficiency", "--rounds", "0"])


@pytest.mark.server
def test_a_short_real_run_keeps_every_round_and_reports_their_median(tmp_path: Path) -> None:
    spec = classify("mobilenet_v3_small", max_batch_size=2, engine="torch", torch_threads=1)
    out = tmp_path / "e.json"
    report = bench_efficiency(spec, sizes=[(320, 240)], duration_s=0.5, rounds=3, out=out)
    (row,) = json.loads(out.read_text())["results"]
    assert row == report["results"][0]
    assert len(row["rounds"]) == 3 and report["rounds"] == 3
    assert [r["order"] for r in row["rounds"]] == [
        [SERVED, ALONE],
        [ALONE, SERVED],
        [SERVED, ALONE],
    ]
    for r in row["rounds"]:
        assert r["served"] > 0 and r["preprocess_alone"] > 0 and r["dnn_alone"] > 0
        cpu_s = (r["preprocess_cpu_ms"] + r["dnn_cpu_ms"] + r["client_cpu_ms"]) / 1e3
        assert r["limit"] == pytest.approx(report["cores"] / cpu_s)
        assert r["ratio"] == pytest.approx(r["served"] / r["limit"])
        assert r["served_cpu_ms"]["stub:classify_dnn"] > 0
    ratios = sorted(r["ratio"] for r in row["rounds"])
    assert row["ratio"] == pytest.approx(ratios[1])
    assert row["ratio_spread"] == pytest.approx(
        {"median": ratios[1], "min": ratios[0], "max": ratios[2], "rounds": 3}
    )
    assert row["ratio_verdict"]["outcome"] in ("met", "not met", "undecided")
