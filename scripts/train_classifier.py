"""Train the shipped MNIST classifier: python scripts/train_classifier.py [--steps N] [--out FILE]

Runs ``course_lib.recipes.train_classifier`` (a small CNN trained on the training pool
with random rotations, shifts and zooms), reports its held-out accuracy, exports the EMA
weights to a small safetensors file and prints its SHA-256 for course_lib/pretrained.py.
The classifier judges generated digits everywhere in the course (classifier-FID, class
coverage, prompt accuracy).
"""

import argparse
import json
from pathlib import Path

from course_lib.pretrained import CHECKPOINT_DIR, export_weights
from course_lib.recipes import CLASSIFIER_TRAINING, train_classifier


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=CLASSIFIER_TRAINING["steps"])
    parser.add_argument("--run-dir", type=Path, default=Path("runs/classifier"))
    parser.add_argument("--out", type=Path, default=CHECKPOINT_DIR / "classifier.safetensors")
    args = parser.parse_args()
    classifier, info = train_classifier(args.run_dir, steps=args.steps)
    digest = export_weights(classifier, args.out, classifier.config, info)
    print(json.dumps(info, indent=1))
    print(f"wrote {args.out}\nsha256 {digest}")


if __name__ == "__main__":
    main()
