"""Predict the noise, x0 or v? The same network, data and budget, three targets: python bench/parameterisation_bench.py

Trains the shipped DDPM's first-stage U-Net (``recipes.DDPM_UNET_CONFIG``, one ResBlock per level) three times by
the "ddpm" recipe, changing only ``prediction_type`` ("epsilon", "sample", "v_prediction"): the same seed, so the
same batches, timesteps and noise; --steps each (default 2,000 of 64, a sixth of the shipped model's first stage, so
that the three fit in under an hour on two CPU cores), with a faster EMA (--ema-decay 0.995: the first stage's
0.9995 averages over 2,000 steps, which would still hold a third of the random initial weights after 2,000). Runs
are resumable (runs/param-<type>/). Each is then measured by the course's protocol (``metrics.quality_report``:
1,000 samples per seed, seeds 0 and 1, floor at the same size) with DDIM at 10 and 50 steps and ancestral DDPM at
50. Each (model, sampler, seed) is stored as soon as it is measured, so a run resumes where it stopped. Writes
bench/results/parameterisation.json and .md.
"""

from course_tools.bench import compare_setting_main, setting_table

PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")
SAMPLERS = [("ddim", 10), ("ddim", 50), ("ddpm", 50)]


def main():
    compare_setting_main(__doc__, "parameterisation", "ddpm", "prediction_type", PREDICTION_TYPES, SAMPLERS,
                         markdown_table, run_prefix="param")


def markdown_table(result) -> str:
    return setting_table(result, "prediction_type",
                         f"Fresh copies of the shipped DDPM's first-stage U-Net, each trained from scratch for "
                         f"{result['training_steps']:,} steps of {result['batch_size']} per target (same seed, batches, "
                         "timesteps and noise)", "network predicts",
                         {"epsilon": "noise ε", "sample": "clean image x0", "v_prediction": "velocity v"},
                         {"ddim": "DDIM", "ddpm": "DDPM"})


if __name__ == "__main__":
    main()
