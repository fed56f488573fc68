"""`blmkd compare`: paired statistics by hand, pairing by split, real runs end to end, bad input."""

from __future__ import annotations

import json
import math

import pytest

from blmkd.cli import main
from blmkd.compare import RunResult, collect_runs, compare_runs, paired_stats, per_class_pairs


def test_paired_stats_by_hand():
    # deltas 1, 2, 3 (pp): mean 2, sample sd 1, t(0.975, 2) = 4.302653 -> half width 4.302653 / sqrt(3)
    s = paired_stats([0.91, 0.92, 0.93], [0.90, 0.90, 0.90])
    assert s["n"] == 3 and s["wins"] == 3 and s["losses"] == s["ties"] == 0
    assert s["mean_delta"] == pytest.approx(0.02) and s["std_delta"] == pytest.approx(0.01)
    half = 4.302653 * 0.01 / math.sqrt(3)
    assert s["ci95"] == pytest.approx([0.02 - half, 0.02 + half], abs=1e-7)
    assert s["ci95"][0] < 0 and s["verdict"] == "no difference shown"
    assert s["p_signflip"] == pytest.approx(2 / 8)  # only "all +" and "all -" reach |mean| = 2
    # six pairs 1..6 pp: t(0.975, 5) = 2.570582, sd = 1.870829 -> [1.5367, 5.4633] pp excludes 0
    s = paired_stats([0.5 + k / 100 for k in range(1, 7)], [0.5] * 6)
    assert s["ci95"] == pytest.approx([0.015367, 0.054633], abs=1e-5) and s["verdict"] == "A > B"
    assert s["p_t"] == pytest.approx(0.00593, abs=5e-5)  # paired: t = 3.5 / (1.870829 / sqrt 6) = 4.583, df 5


def test_five_seeds_cannot_reach_five_percent_by_sign_flips():
    s = paired_stats([0.99, 0.98, 0.985, 0.97, 0.975], [0.98, 0.97, 0.98, 0.96, 0.97])
    assert s["wins"] == 5 and s["p_signflip"] == pytest.approx(2 / 32)


def test_mixed_signs_ties_and_a_worse():
    s = paired_stats([0.90, 0.80, 0.85, 0.70], [0.95, 0.80, 0.90, 0.80])
    assert (s["wins"], s["losses"], s["ties"]) == (0, 3, 1)
    # deltas −5, 0, −5, −10 pp: mean −5, sd √(50/3) = 4.0825, t(0.975, 3) = 3.182446
    # -> half width 3.182446 · 4.0825 / 2 = 6.4961 pp: [−11.496, +1.496] pp holds 0
    assert s["mean_delta"] == pytest.approx(-0.05) and s["std_delta"] == pytest.approx(
        math.sqrt(50 / 3) / 100
    )
    assert (
        s["ci95"] == pytest.approx([-0.114961, 0.014961], abs=1e-6) and s["verdict"] == "no difference shown"
    )
    assert s["p_signflip"] == pytest.approx(
        4 / 16
    )  # the tie's sign is free: 2 of 8 flips of the rest reach 20 pp
    assert s["p_t"] == pytest.approx(0.09172, abs=5e-5)  # t = −5 / (4.0825 / 2) = −2.449, df 3
    # the six pairs of test_paired_stats_by_hand with A and B swapped: the interval excludes 0 below it
    worse = paired_stats([0.5] * 6, [0.5 + k / 100 for k in range(1, 7)])
    assert worse["ci95"] == pytest.approx([-0.054633, -0.015367], abs=1e-5) and worse["verdict"] == "A < B"
    assert (worse["wins"], worse["losses"]) == (0, 6)
    one = paired_stats([0.9], [0.8])
    assert one["ci95"] is None and one["p_t"] is None and one["verdict"] == "no difference shown"
    with pytest.raises(ValueError):
        paired_stats([0.9, 0.8], [0.9])


def _train(ip_crop_path, out, seeds, extra=()):
    main(["train-student", "--student", "blm_test", "--dataset", str(ip_crop_path), "--seeds", seeds, "--epochs", "1",
          "--batch", "256", "--out", str(out), "--no-progress", *extra])  # fmt: skip


def test_compare_pairs_real_runs_by_split(ip_crop_path, tmp_path, capsys):
    _train(ip_crop_path, tmp_path / "A", "0,1,2")
    _train(ip_crop_path, tmp_path / "B", "1,2,3", ["--label-smoothing", "0.1"])
    a, b = collect_runs(tmp_path / "A"), collect_runs(tmp_path / "B")
    assert [r.seed for r in a] == [0, 1, 2] and len({r.digest for r in a}) == 3
    res = compare_runs(a, b)
    assert [p["seed"] for p in res["pairs"]] == [1, 2]  # seeds 0 (A) and 3 (B) have no partner
    assert res["unpaired_a"] == [str(tmp_path / "A" / "seed_0")] and res["unpaired_b"] == [
        str(tmp_path / "B" / "seed_3")
    ]
    want = [
        json.loads((tmp_path / d / "best.json").read_text())["metrics"]["test"]["oa"]
        for d in ("A/seed_1", "B/seed_1")
    ]
    assert res["pairs"][0]["oa_a"] == pytest.approx(want[0]) and res["pairs"][0]["oa_b"] == pytest.approx(
        want[1]
    )
    assert res["stats"]["oa"]["deltas"][0] == pytest.approx(want[0] - want[1])

    # per class: the mean over the two pairs of each run's recorded per-class test accuracy
    rows = {d: json.loads((tmp_path / d / "best.json").read_text())["metrics"]["test"]["per_class"]
            for d in ("A/seed_1", "A/seed_2", "B/seed_1", "B/seed_2")}  # fmt: skip
    assert [r["id"] for r in res["per_class"]] == [r["id"] for r in rows["A/seed_1"]]
    for i, r in enumerate(res["per_class"]):
        a_mean = (rows["A/seed_1"][i]["accuracy"] + rows["A/seed_2"][i]["accuracy"]) / 2
        b_mean = (rows["B/seed_1"][i]["accuracy"] + rows["B/seed_2"][i]["accuracy"]) / 2
        assert r["mean_a"] == pytest.approx(a_mean) and r["mean_b"] == pytest.approx(b_mean)
        assert r["mean_delta"] == pytest.approx(a_mean - b_mean) and r["n"] == 2 and 0 <= r["wins"] <= 2

    capsys.readouterr()
    main(
        [
            "compare",
            str(tmp_path / "A"),
            str(tmp_path / "B"),
            "--json",
            str(tmp_path / "cmp.json"),
            "--per-class",
        ]
    )
    out = capsys.readouterr().out
    assert "verdict (OA)" in out and "not paired (A" in out and "n = 2 pairs" in out
    assert "per-class test accuracy" in out and rows["A/seed_1"][0]["name"] in out
    saved = json.loads((tmp_path / "cmp.json").read_text())
    assert saved["stats"]["oa"]["deltas"] == pytest.approx(res["stats"]["oa"]["deltas"])
    assert saved["per_class"] == res["per_class"]

    # metrics from an `evaluate --json` file in each run directory (here: the train split's)
    for s in (0, 1, 2):
        main(
            [
                "evaluate",
                str(tmp_path / "A" / f"seed_{s}"),
                "--set",
                "train",
                "--json",
                str(tmp_path / "A" / f"seed_{s}" / "train.json"),
            ]
        )
    res2 = compare_runs(collect_runs(tmp_path / "A", "train.json"), b)
    got = json.loads((tmp_path / "A" / "seed_1" / "train.json").read_text())["oa"]
    assert res2["pairs"][0]["oa_a"] == pytest.approx(got)


def test_compare_bad_input_is_one_line(ip_crop_path, tmp_path, capsys):
    _train(ip_crop_path, tmp_path / "A", "0,1")
    main(["train-student", "--student", "blm_test", "--dataset", str(ip_crop_path), "--strategy", "per-class", "--train", "5",
          "--epochs", "1", "--batch", "256", "--out", str(tmp_path / "other"), "--no-progress"])  # fmt: skip
    (tmp_path / "empty").mkdir()
    cases = [
        ([str(tmp_path / "nope"), str(tmp_path / "A")], "not found"),
        ([str(tmp_path / "empty"), str(tmp_path / "A")], "no runs under"),
        ([str(tmp_path / "A"), str(tmp_path / "other")], "share no split"),
        ([str(tmp_path / "A"), str(tmp_path / "A"), "--metric", "f1"], "--metric must be one of"),
        (
            [str(tmp_path / "A"), str(tmp_path / "A"), "--a-file", "tta.json"],
            "not found (write it with `blmkd evaluate",
        ),
    ]
    for args, message in cases:
        capsys.readouterr()
        with pytest.raises(SystemExit):
            main(["compare", *args])
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], (args, err)


def test_per_class_pairs_needs_every_run_to_record_the_same_classes(tmp_path):
    def run(acc, ids=(1, 2)):
        rows = tuple({"id": i, "name": f"c{i}", "accuracy": a, "support": 10} for i, a in zip(ids, acc))
        return RunResult(tmp_path, "m", "s", 0, "d", {"oa": 0.9, "aa": 0.9, "kappa": 0.9}, rows)

    got = per_class_pairs([(run([1.0, 0.5]), run([0.8, 0.5])), (run([0.6, 0.7]), run([0.8, 0.4]))])
    assert [r["name"] for r in got] == ["c1", "c2"]
    assert (
        got[0]["mean_a"] == pytest.approx(0.8)
        and got[0]["mean_delta"] == pytest.approx(0.0)
        and got[0]["wins"] == 1
    )
    assert got[1]["mean_delta"] == pytest.approx(0.15) and got[1]["wins"] == 1 and got[1]["support"] == 10
    assert per_class_pairs([(run([1.0, 0.5]), run([]))]) == []  # B recorded none
    assert per_class_pairs([(run([1.0, 0.5]), run([0.8, 0.5], ids=(1, 3)))]) == []  # other classes
