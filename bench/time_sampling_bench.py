"""Uniform or logit-normal noise levels for flow matching? python bench/time_sampling_bench.py

Flow matching trains at noise levels sigma drawn from some distribution (``flow.sample_sigmas``): uniform in
[0, 1], or logit-normal (the sigmoid of a standard normal, SD3's choice), which visits the middle levels more
and the two ends less. This bench trains the shipped flow model's U-Net twice by the "flow" recipe, changing only
``time_sampling``: the same seed, steps and EMA; --steps each (default 2,000 of 64, a sixth of
the shipped model's first stage, with EMA 0.995, exactly like bench/parameterisation_bench.py, so its rows compare
with that bench's). Runs are resumable (runs/timesampling-<kind>/). Each model is measured by the course's
protocol (``metrics.quality_report``: 1,000 samples per seed, seeds 0 and 1, floor at the same size) with Euler
at 8 and 50 steps. Writes bench/results/time_sampling.json and .md, and the README table.
"""

from course_lib.flow import TIME_SAMPLING
from course_tools.bench import compare_setting_main, setting_table

SAMPLERS = [("euler", 8), ("euler", 50)]
NAMES = {"uniform": "uniform", "logit_normal": "logit-normal"}


def main():
    compare_setting_main(__doc__, "time_sampling", "flow", "time_sampling", TIME_SAMPLING, SAMPLERS, markdown_table,
                         run_prefix="timesampling")


def markdown_table(result) -> str:
    return setting_table(result, "time_sampling",
                         f"Fresh copies of the shipped flow model's U-Net, each trained from scratch for "
                         f"{result['training_steps']:,} steps of {result['batch_size']} with one distribution of "
                         f"training noise levels (same seed; EMA {result['ema_decay']})", "training σ", NAMES,
                         {"euler": "Euler"})


if __name__ == "__main__":
    main()
