"""Train a shipped model by its recipe: python scripts/train.py NAME [--steps N] [--device cuda] [--set KEY=VALUE]

NAME is one of classifier, ddpm, flow, reflow, ae2d, vae2d, vae, clip, ldm (``course_lib.recipes.RECIPES``).
It trains on the MNIST training pool (never the held-out digits), exports the EMA weights with
their provenance (hardware, steps, seconds, settings) to data/checkpoints/NAME.safetensors and
prints the SHA-256 to pin in course_lib/pretrained.py. Interrupt it any time: run the same
command again and it resumes from runs/NAME/state.pt. An existing checkpoint is never overwritten.
A recipe with a second stage (``course_lib.recipes.SECOND_STAGE``: the DDPM's and the flow model's, batches of 1024
meant for a GPU, on the network grown to two ResBlocks per level; the DDPM's, ``DDPM_SECOND_STAGE``, also switches it
to predicting v) runs it after the first;
--first-stage FILE skips the first and starts the second from FILE, --no-second-stage stops after the first.

--set changes one setting of the recipe (repeat it for more), e.g. on a GPU
``--set batch_size=512 --set prediction_type=v_prediction``; --second-set changes one of the second stage's. The
settings used are recorded in the checkpoint.
The LDM needs the shipped VAE and CLIP, reflow the shipped flow model (train those first if you retrain everything).
"""

import argparse
import json
from pathlib import Path

from course_lib.pipelines import network
from course_lib.pretrained import CHECKPOINT_DIR, export_weights
from course_lib.recipes import RECIPES, train_model


def settings(parser, flag: str, items: list) -> dict:
    """KEY=VALUE strings as a dict: numbers, true/false and lists as JSON, anything else (v_prediction) as text."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            parser.error(f"{flag} takes KEY=VALUE, got {item!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("name", choices=list(RECIPES), help="which shipped model to train")
    parser.add_argument("--steps", type=int, default=None, help="default: the recipe's")
    parser.add_argument("--device", default=None, help="cpu, cuda or mps (default: the best available)")
    parser.add_argument("--run-dir", type=Path, default=None, help="resumable state (default runs/NAME)")
    parser.add_argument("--out", type=Path, default=None, help="default data/checkpoints/NAME.safetensors")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe setting, e.g. --set lr=5e-4 (repeatable)")
    parser.add_argument("--first-stage", type=Path, default=None, metavar="FILE",
                        help="start the recipe's second stage from this checkpoint instead of training a first")
    parser.add_argument("--no-second-stage", action="store_true", help="train the first stage only")
    parser.add_argument("--second-set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a setting of the second stage, e.g. --second-set batch_size=1024 (repeatable)")
    args = parser.parse_args(argv)
    out = args.out or CHECKPOINT_DIR / f"{args.name}.safetensors"
    if out.exists():
        parser.error(f"{out} exists; delete it first if you mean to replace it, or pass --out")
    overrides = {} if args.steps is None else {"steps": args.steps}
    overrides.update(settings(parser, "--set", args.set))
    second = settings(parser, "--second-set", args.second_set)
    if second and args.no_second_stage:
        parser.error("--second-set changes the second stage, which --no-second-stage leaves out; drop one of them")
    ready, info = train_model(args.name, args.run_dir, device=args.device, first_stage=args.first_stage,
                              second_stage=False if args.no_second_stage else (second or True), **overrides)
    model = network(ready)
    digest = export_weights(model, out, model.config, info)
    print(json.dumps(info, indent=1))
    print(f"wrote {out}\nsha256 {digest}")


if __name__ == "__main__":
    main()
