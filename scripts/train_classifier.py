"""Train the shipped MNIST classifier: python scripts/train_classifier.py [--steps N] [--out FILE]

Trained on the training pool only (with random rotations, shifts and zooms), evaluated
on the held-out digits; the EMA weights are exported to a small safetensors file whose
SHA-256 goes into course_lib/pretrained.py. The classifier judges generated digits
(classifier-FID, class coverage, prompt accuracy) everywhere in the course.
"""

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from course_lib.data import load_mnist
from course_lib.device import get_device, seed_everything
from course_lib.metrics import MNISTClassifier, classifier_loss, predict
from course_lib.pretrained import CHECKPOINT_DIR, export_weights
from course_lib.train import train


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--run-dir", type=Path, default=Path("runs/classifier"))
    parser.add_argument("--out", type=Path, default=CHECKPOINT_DIR / "classifier.safetensors")
    args = parser.parse_args()

    seed_everything(args.seed)
    device = get_device()
    train_set, heldout = load_mnist("train"), load_mnist("test")
    model = MNISTClassifier()
    start = time.time()
    result = train(model, classifier_loss, train_set, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                   weight_decay=5e-4, warmup_steps=100, ema_decay=0.995, seed=args.seed,
                   checkpoint_path=args.run_dir / "state.pt", checkpoint_every=500, device=device,
                   desc="classifier")
    classifier = result.ema_model.cpu()
    accuracy = (predict(classifier, heldout.images) == heldout.labels).float().mean().item()
    info = {"steps": result.steps_done, "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
            "train_seconds_last_session": round(time.time() - start),
            "hardware": f"{platform.machine()}, {torch.get_num_threads()} threads, device {device}",
            "data": train_set.source, "heldout_accuracy": round(accuracy, 5),
            "script": "scripts/train_classifier.py"}
    print(json.dumps(info, indent=1))
    digest = export_weights(classifier, args.out, classifier.config, info)
    print(f"wrote {args.out}\nsha256 {digest}")


if __name__ == "__main__":
    main()
