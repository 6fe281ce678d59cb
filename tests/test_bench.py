"""course_tools.bench: the rule that picks a default guidance from the guidance bench, and finding its rows."""

import pytest

from course_tools.bench import guidance_row, recommended_guidance


def row(method, scale, ratio, accuracy, thickness, spread=(0.5, 0.5)):
    return {"method": method, "guidance_scale": scale, "ratio": list(ratio), "accuracy": list(accuracy),
            "thickness_adherence": list(thickness), "spread": list(spread)}


GUIDANCE = {"interval": [0.1, 0.6], "rows": [
    row("cfg", 1.5, (1.1, 1.2), (0.990, 0.993), (0.96, 0.97)),       # most realistic, but below 99.5% accuracy
    row("cfg", 2.0, (1.4, 1.5), (0.997, 0.999), (0.97, 0.98)),
    row("cfg", 3.0, (2.0, 2.1), (1.0, 1.0), (1.0, 1.0)),
    row("interval", 2.0, (1.3, 1.3), (0.996, 0.994), (0.96, 0.96)),   # one seed below 99.5%: not eligible
    row("interval", 3.0, (1.7, 1.8), (0.999, 1.0), (0.94, 0.99)),     # one seed below 95% thickness
]}


def test_recommended_guidance_needs_every_seed_above_the_floors_then_the_lowest_fd():
    assert recommended_guidance(GUIDANCE["rows"]) is GUIDANCE["rows"][1]            # cfg 2: 1.45, not cfg 3's 2.05
    assert recommended_guidance(GUIDANCE["rows"], {"accuracy": 0.99, "thickness_adherence": 0.9}) is GUIDANCE["rows"][0]
    assert recommended_guidance(GUIDANCE["rows"], {"accuracy": 1.01, "thickness_adherence": 0.0}) is None


def test_guidance_row_finds_plain_and_interval_rows_and_refuses_unmeasured_ones():
    assert guidance_row(GUIDANCE, 2.0, (0, 1)) is GUIDANCE["rows"][1]
    assert guidance_row(GUIDANCE, 2.0, (0.1, 0.6)) is GUIDANCE["rows"][3]
    with pytest.raises(ValueError, match="measured the interval"):
        guidance_row(GUIDANCE, 2.0, (0.2, 0.6))
    with pytest.raises(ValueError, match="no row for cfg guidance at scale 5"):
        guidance_row(GUIDANCE, 5.0, (0.0, 1.0))
