"""Train the autoencoders of notebook 03: python scripts/train_vae.py --model ae2d|vae2d|vae [--steps N]

Runs ``course_lib.recipes.train_autoencoder`` on the MNIST training pool (never the
held-out digits), then exports the EMA weights to data/checkpoints/<model>.safetensors
and prints the SHA-256 for course_lib/pretrained.py. Interrupted runs resume from
runs/<model>/state.pt.

  ae2d   plain autoencoder, 2-D code (the map with holes)
  vae2d  VAE, 2-D latent (the digit map, the manifold grid)
  vae    convolutional VAE, 4 x 7 x 7 latent, the one latent diffusion uses
"""

import argparse
import json
from pathlib import Path

from course_lib.pretrained import CHECKPOINT_DIR, export_weights
from course_lib.recipes import AUTOENCODERS, train_autoencoder


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=sorted(AUTOENCODERS), required=True)
    parser.add_argument("--steps", type=int, default=None, help="default: the recipe's")
    parser.add_argument("--out", type=Path, default=None, help="default: data/checkpoints/<model>.safetensors")
    args = parser.parse_args()
    overrides = {"steps": args.steps} if args.steps else {}
    model, info = train_autoencoder(args.model, **overrides)
    out = args.out or CHECKPOINT_DIR / f"{args.model}.safetensors"
    digest = export_weights(model, out, model.config, info)
    print(json.dumps(info, indent=1))
    print(f"wrote {out}\nsha256 {digest}")


if __name__ == "__main__":
    main()
