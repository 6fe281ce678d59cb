"""Train the shipped pixel-space DDPM: python scripts/train_ddpm.py [--steps N] [--out FILE]

Runs ``course_lib.recipes.train_ddpm`` (a noise-prediction UNet on the MNIST training
pool, never the held-out digits), then exports the EMA weights to a small safetensors
file and prints its SHA-256 for course_lib/pretrained.py. Interrupt it any time: run it
again and it resumes from runs/ddpm/state.pt.
"""

import argparse
import json
from pathlib import Path

from course_lib.pretrained import CHECKPOINT_DIR, export_weights
from course_lib.recipes import DDPM_TRAINING, DDPM_UNET_CONFIG, train_ddpm


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=DDPM_TRAINING["steps"])
    parser.add_argument("--run-dir", type=Path, default=Path("runs/ddpm"))
    parser.add_argument("--out", type=Path, default=CHECKPOINT_DIR / "ddpm.safetensors")
    args = parser.parse_args()
    result, info = train_ddpm(args.run_dir, steps=args.steps)
    digest = export_weights(result.ema_model, args.out, DDPM_UNET_CONFIG, info)
    print(json.dumps(info, indent=1))
    print(f"wrote {args.out}\nsha256 {digest}")


if __name__ == "__main__":
    main()
