"""course_tools.bench: the rule that picks a default guidance from the guidance bench, finding its rows, and the
tables' provenance sentences, and the DDPM bench's refusal to write a table with rows missing."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from course_tools.bench import drawn_and_timed, guidance_row, guidance_settings, recommended_guidance, training_summary

ROOT = Path(__file__).resolve().parent.parent


def row(method, scale, ratio, accuracy, thickness, spread=(0.9, 0.9), interval=(0, 1), annealing=None):
    return {"method": method, "guidance_scale": scale, "ratio": list(ratio), "accuracy": list(accuracy),
            "thickness_adherence": list(thickness), "spread": list(spread),
            "settings": guidance_settings(interval, annealing)}


GUIDANCE = {"rows": [
    row("cfg", 1.5, (1.1, 1.2), (0.990, 0.993), (0.96, 0.97)),       # most realistic, but below 99.5% accuracy
    row("cfg", 2.0, (1.4, 1.5), (0.997, 0.999), (0.97, 0.98)),
    row("cfg", 3.0, (2.0, 2.1), (1.0, 1.0), (1.0, 1.0)),
    row("interval", 2.0, (1.3, 1.3), (0.996, 0.994), (0.96, 0.96), interval=(0.1, 0.6)),  # one seed below 99.5%
    row("interval", 3.0, (1.7, 1.8), (0.999, 1.0), (0.94, 0.99), interval=(0.1, 0.6)),    # one below 95% thickness
    row("cads", 3.0, (1.2, 1.3), (0.999, 1.0), (0.97, 0.99), (0.84, 0.9), (0, 0.2), (0.4, 0.9)),  # one seed too alike
]}


def test_recommended_guidance_needs_every_seed_above_the_floors_then_the_lowest_fd():
    assert recommended_guidance(GUIDANCE["rows"]) is GUIDANCE["rows"][1]            # cfg 2: 1.45, not cfg 3's 2.05
    assert recommended_guidance(GUIDANCE["rows"], {"accuracy": 0.99, "thickness_adherence": 0.9}) is GUIDANCE["rows"][0]
    assert recommended_guidance(GUIDANCE["rows"], {"accuracy": 0.995, "spread": 0.8}) is GUIDANCE["rows"][5]
    assert recommended_guidance(GUIDANCE["rows"], {"accuracy": 1.01, "thickness_adherence": 0.0}) is None


def test_guidance_row_finds_rows_by_every_setting_and_refuses_unmeasured_ones():
    assert guidance_row(GUIDANCE, 2.0, (0, 1)) is GUIDANCE["rows"][1]
    assert guidance_row(GUIDANCE, 2.0, (0.1, 0.6)) is GUIDANCE["rows"][3]
    assert guidance_row(GUIDANCE, 3.0, (0.0, 0.2), (0.4, 0.9)) is GUIDANCE["rows"][5]
    with pytest.raises(ValueError, match="no row for guidance scale 2"):
        guidance_row(GUIDANCE, 2.0, (0.2, 0.6))
    with pytest.raises(ValueError, match="no row for guidance scale 3"):
        guidance_row(GUIDANCE, 3.0, (0.0, 0.2))                # measured only with condition annealing
    with pytest.raises(ValueError, match="no row for guidance scale 5"):
        guidance_row(GUIDANCE, 5.0, (0.0, 1.0))


def test_table_headers_say_where_samples_were_drawn_and_where_timed():
    cpu, gpu = "x86_64, 2 CPU threads", "NVIDIA H200"
    # rows that do not say were drawn where the bench ran, which is where it timed them
    assert drawn_and_timed([{}, {"sampled_on": cpu}], cpu) == f"Samples drawn and timed on {cpu}."
    assert drawn_and_timed([{}, {"sampled_on": gpu}], cpu) == f"Samples drawn on {gpu}, {cpu}; timed on {cpu}."
    # with row labels, the rows drawn away from where most were are named
    rows = [{"name": "A", "sampled_on": gpu}, {"name": "B", "sampled_on": gpu}, {"name": "C"}, {"name": "D"}, {"name": "E"}]
    assert drawn_and_timed(rows, cpu, label=lambda r: r["name"]) == f"Samples drawn on {cpu}, except A, B on {gpu}; timed on {cpu}."
    assert drawn_and_timed(rows[2:], cpu, label=lambda r: r["name"]) == f"Samples drawn and timed on {cpu}."


def test_a_row_is_timed_by_its_fastest_pass():
    """A pass the machine slowed down (here the first, made to sleep) does not set the row's time; all are kept."""
    import time

    from course_tools.bench import TIMING_PASSES, time_rows
    delays = iter([0.5] + [0.02] * (TIMING_PASSES - 1))
    row = {}
    time_rows([(row, lambda: time.sleep(next(delays)))], batch_size=10)
    assert len(row["seconds_per_digit_passes"]) == TIMING_PASSES >= 3
    # generous bounds (a busy CI machine oversleeps), but the slow pass is 25 times the others
    assert row["seconds_per_digit_passes"][0] >= 0.05 and 0.002 <= row["seconds_per_digit"] < 0.03
    assert row["seconds_per_digit"] == min(row["seconds_per_digit_passes"])


def test_rows_are_timed_in_turns_so_a_slow_stretch_slows_every_row_alike():
    """One pass of each row per round (a, b, a, b, ...), saving after every round; not all of a's passes first."""
    from course_tools.bench import TIMING_PASSES, time_rows
    calls, saved = [], []
    a, b = {}, {"seconds_per_digit": 9.0}            # b's old timing is replaced, not kept as a pass
    time_rows([(a, lambda: calls.append("a")), (b, lambda: calls.append("b"))], batch_size=1,
              after_round=lambda: saved.append(len(calls)))
    assert calls == ["a", "b"] * TIMING_PASSES
    assert saved == [2 * (i + 1) for i in range(TIMING_PASSES)]
    assert len(b["seconds_per_digit_passes"]) == TIMING_PASSES and b["seconds_per_digit"] < 9.0


def test_a_share_exactly_at_a_floor_reaches_it_though_float32_stored_it_just_below():
    from course_tools.bench import meets_floors
    at_floor = row("cfg", 3.0, (1.2, 1.2), (0.995, 0.9950000047683716), (0.949999988079071, 0.96), (0.85, 0.9))
    assert meets_floors(at_floor)
    assert not meets_floors(row("cfg", 3.0, (1.2, 1.2), (0.995, 0.995), (0.949, 0.96), (0.85, 0.9)))


def test_compare_calls_two_figures_apart_only_when_their_seed_ranges_do_not_overlap():
    from course_tools.bench import OVERLAP, compare
    assert compare([1.2, 1.3], [1.4, 1.5]) == "lower than"
    assert compare([1.4, 1.5], [1.2, 1.3], "better than", "worse than") == "worse than"
    assert compare([1.2, 1.4], [1.4, 1.5]) == OVERLAP          # touching ranges: the seeds cannot separate them
    assert compare([1.0, 2.0], [1.4, 1.5], overlap="as good as") == "as good as"   # one range inside the other
    assert compare([1.3, 1.2], [1.4]) == "lower than"           # the order of the seeds does not matter


def test_draw_gaps_compare_draws_only_within_a_seed():
    from course_tools.bench import draw_gaps
    gaps = draw_gaps([[4.0, 4.4, 5.0], [8.0, 8.0, 12.0]])    # seed 1's distances are larger, but only ratios count
    assert gaps["pairs"] == 6 and gaps["seed"] == 1
    assert abs(gaps["largest"] - 1.5) < 1e-12                # 12 / 8; never 12 / 4.0 across seeds
    assert 1.25 < gaps["q90"] <= 1.5


def test_on_seeds_keeps_the_asked_seeds_values_of_every_per_seed_list():
    from course_tools.bench import on_seeds
    report = {"seeds": [0, 1, 2], "ratio": [1.0, 1.5, 0.9], "floor": [4.0, 4.1, 4.2], "num_samples": 1000}
    assert on_seeds(report, [0, 2]) == {"seeds": [0, 2], "ratio": [1.0, 0.9], "floor": [4.0, 4.2], "num_samples": 1000}


def test_real_digit_figures_are_refused_beside_rows_with_another_floor():
    from course_tools.bench import real_digit_figures, results
    flow_rows = results("flow")["rows"]                  # measured against the same reference digits and floor
    assert "real_draws_fd" in real_digit_figures(flow_rows)
    moved = {**flow_rows[0], "floor": [f * 1.01 for f in flow_rows[0]["floor"]]}
    with pytest.raises(ValueError, match="not the DDPM bench's"):
        real_digit_figures([moved])


def test_training_summary_says_what_each_stage_did():
    one = {"steps": 12000, "batch_size": 64, "lr": 1e-3, "train_seconds": 7702, "hardware": "x86_64, 2 CPU threads"}
    assert training_summary(one) == "12,000 steps of 64, 7,702 s on x86_64, 2 CPU threads"
    two = {**one, "steps": 14850, "batch_size": 1024, "train_seconds": 7956, "hardware": "H200", "stages": [
        one, {"steps": 2850, "batch_size": 1024, "lr": 1e-3, "train_seconds": 254, "hardware": "H200"}]}
    assert training_summary(two) == ("two stages: 12,000 steps of 64 at lr 0.001, 7,702 s on x86_64, 2 CPU threads; "
                                     "then, from its EMA weights, 2,850 steps of 1,024 at lr 0.001, 254 s on H200")
    bf16 = {**two, "stages": [one, {**two["stages"][1], "precision": "bfloat16"}]}
    assert "2,850 steps of 1,024 at lr 0.001 in bfloat16 autocast, 254 s" in training_summary(bf16)


def test_the_ddpm_bench_writes_no_table_while_rows_are_missing(tmp_path, monkeypatch, capsys):
    """A run limited to a few rows (or to none) stores what it measured but writes no ddpm.md (nor README table)
    that would silently lack the rest."""
    spec = importlib.util.spec_from_file_location("ddpm_bench", ROOT / "bench" / "ddpm_bench.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    monkeypatch.setattr(sys, "argv", ["ddpm_bench.py", "--max-steps", "0", "--out", str(tmp_path)])
    bench.main()
    assert "not measured yet: DDIM at 50 steps, DDIM at 20 steps," in capsys.readouterr().out
    assert not (tmp_path / "ddpm.md").exists()


def test_share_apart_counts_the_real_pairs_at_least_that_far_apart():
    from course_tools.bench import draw_gaps, share_apart
    gaps = draw_gaps([[4.0, 4.4, 5.0]])          # pairs 1.1, 1.136..., 1.25
    assert share_apart(gaps, 1.1) == 1.0          # "at least": a pair exactly 1.1 apart counts
    assert share_apart(gaps, 1.2) == 1 / 3
    assert share_apart(gaps, 1.3) == 0.0


def test_the_ddpm_bench_measures_other_seeds_only_in_a_folder_of_their_own(tmp_path, monkeypatch, capsys):
    """--seeds other than the table's are refused beside the table (they would mix into its ranges); in their own
    --out, --rows limits the run to those rows, their JSON records those seeds, and no table is written."""
    spec = importlib.util.spec_from_file_location("ddpm_bench", ROOT / "bench" / "ddpm_bench.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    monkeypatch.setattr(sys, "argv", ["ddpm_bench.py", "--seeds", "2"])
    with pytest.raises(SystemExit):
        bench.main()
    assert "a folder of their own" in capsys.readouterr().err
    monkeypatch.setattr(sys, "argv", ["ddpm_bench.py", "--rows", "ddim-7", "--out", str(tmp_path)])
    with pytest.raises(SystemExit):
        bench.main()
    assert "no row ddim-7" in capsys.readouterr().err
    monkeypatch.setattr(sys, "argv", ["ddpm_bench.py", "--seeds", "2", "--rows", "ddim-10", "--no-timing",
                                      "--num-samples", "20", "--batch-size", "10", "--out", str(tmp_path)])
    bench.main()
    stored = json.loads((tmp_path / "ddpm.json").read_text())
    assert stored["seeds"] == [2] and [(r["sampler"], r["steps"], r["seeds"]) for r in stored["rows"]] == [("ddim", 10, [2])]
    assert not (tmp_path / "ddpm.md").exists()
    monkeypatch.setattr(sys, "argv", ["ddpm_bench.py", "--seeds", "4", "--rows", "ddim-10", "--no-timing",
                                      "--num-samples", "20", "--batch-size", "10", "--out", str(tmp_path)])
    bench.main()                          # a second run adds its seed, and the file says it holds both
    stored = json.loads((tmp_path / "ddpm.json").read_text())
    assert stored["seeds"] == [2, 4] and stored["rows"][0]["seeds"] == [2, 4]
