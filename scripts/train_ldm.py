"""Train the shipped text-conditioned latent-diffusion UNet: python scripts/train_ldm.py [--steps N] [--out FILE]

Runs ``course_lib.recipes.train_ldm`` (a noise-prediction UNet on the VAE latents of the
MNIST training pool, never the held-out digits, reading captions through the frozen CLIP
text encoder), then exports the EMA weights to a small safetensors
file and prints its SHA-256 for course_lib/pretrained.py. Interrupt it any time: run it
again and it resumes from runs/ldm/state.pt.
"""

import argparse
import json
from pathlib import Path

from course_lib.pretrained import CHECKPOINT_DIR, export_weights
from course_lib.recipes import LDM_TRAINING, LDM_UNET_CONFIG, train_ldm


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=LDM_TRAINING["steps"])
    parser.add_argument("--run-dir", type=Path, default=Path("runs/ldm"))
    parser.add_argument("--out", type=Path, default=CHECKPOINT_DIR / "ldm.safetensors")
    args = parser.parse_args()
    result, info = train_ldm(args.run_dir, steps=args.steps)
    digest = export_weights(result.ema_model, args.out, LDM_UNET_CONFIG, info)
    print(json.dumps(info, indent=1))
    print(f"wrote {args.out}\nsha256 {digest}")


if __name__ == "__main__":
    main()
