"""Train the shipped CLIP of notebook 04: python scripts/train_clip.py [--steps N] [--out FILE]

Runs ``course_lib.recipes.train_clip`` (captioned digits of the MNIST training pool, never
the held-out digits, and never the held-out combination "thin eight"), then exports the EMA
weights to a safetensors file and prints its SHA-256 for course_lib/pretrained.py.
Interrupted runs resume from runs/clip/state.pt.
"""

import argparse
import json
from pathlib import Path

from course_lib.pretrained import CHECKPOINT_DIR, export_weights
from course_lib.recipes import CLIP_CONFIG, CLIP_TRAINING, train_clip


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=CLIP_TRAINING["steps"])
    parser.add_argument("--run-dir", type=Path, default=Path("runs/clip"))
    parser.add_argument("--out", type=Path, default=CHECKPOINT_DIR / "clip.safetensors")
    args = parser.parse_args()
    model, info = train_clip(args.run_dir, steps=args.steps)
    digest = export_weights(model, args.out, CLIP_CONFIG, info)
    print(json.dumps({k: v for k, v in info.items() if k != "thresholds"}, indent=1))
    print(f"wrote {args.out}\nsha256 {digest}")


if __name__ == "__main__":
    main()
