"""Measure the shipped CLIP of notebook 04 on the held-out digits: python bench/clip_bench.py

* zero-shot top-1: each held-out digit gets the class whose prompt ("a handwritten seven", ...)
  is most similar to it; no classifier was ever trained on digit labels;
* linear probe: a logistic regression fitted on the frozen image embeddings of the training pool;
* attribute retrieval: for "a thick <d>", "a thin <d>" (and the other attribute words), the share of
  the 10 most similar held-out images that are that digit *and* measure as that attribute (with the
  thresholds stored in the checkpoint). Chance is the share of held-out digits of that class that measure as
  the attribute: the thirds were cut on the training pool, so it is not exactly 1/3.
  "thin" with eight was never captioned in training: its row is the compositional test.

Writes bench/results/clip.json and clip.md and refreshes the README between <!-- bench:clip --> markers.
About half a minute on 2 CPU cores.
"""

import argparse
import time

import torch

from course_lib import pipelines
from course_lib.captions import ATTRIBUTES, DIGIT_WORDS, HELD_OUT_COMBINATION, attribute_prompt, class_prompt
from course_lib.captions import attribute_matches
from course_lib.clip import embed_images, linear_probe, retrieval_precision, zero_shot_classify
from course_lib.data import load_mnist

from course_tools.bench import RESULTS, write_results


@torch.no_grad()
def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--k", type=int, default=10, help="how many retrieved images are checked")
    parser.add_argument("--out", default=RESULTS)
    args = parser.parse_args()
    start = time.perf_counter()
    clip = pipelines.load("clip", device="cpu")
    train, heldout = load_mnist("train"), load_mnist("test")

    train_embeddings, heldout_embeddings = embed_images(clip, train.images), embed_images(clip, heldout.images)
    predicted = zero_shot_classify(clip, heldout_embeddings, [class_prompt(d) for d in range(10)])
    zero_shot = (predicted == heldout.labels).float().mean().item()
    probe = linear_probe(train_embeddings, train.labels, heldout_embeddings, heldout.labels)

    retrieval, chance = {}, {}
    for pair in ATTRIBUTES.values():
        for word in pair:
            matches = [attribute_matches(clip.thresholds, heldout.images, heldout.labels, d, word) for d in range(10)]
            retrieval[word] = [retrieval_precision(clip, attribute_prompt(word, d), heldout_embeddings, matches[d],
                                                   k=args.k) for d in range(10)]
            chance[word] = [matches[d][heldout.labels == d].float().mean().item() for d in range(10)]
    held_word, held_digit = HELD_OUT_COMBINATION
    seen = [p for word in ("thick", "thin") for d, p in enumerate(retrieval[word])
            if (word, d) != HELD_OUT_COMBINATION]
    result = {"heldout": len(heldout), "data": heldout.source, "k": args.k,
              "zero_shot_top1": round(zero_shot, 4), "linear_probe": round(probe, 4),
              "zero_shot_per_class": [round((predicted[heldout.labels == d] == d).float().mean().item(), 4)
                                      for d in range(10)],
              "thickness_retrieval_seen_mean": round(sum(seen) / len(seen), 4),
              "thickness_retrieval_seen_min": round(min(seen), 4),
              "held_out_combination": f"{held_word} {DIGIT_WORDS[held_digit]}",
              "held_out_combination_precision": round(retrieval[held_word][held_digit], 4),
              "retrieval": {w: [round(p, 3) for p in ps] for w, ps in retrieval.items()},
              "chance": {w: [round(p, 3) for p in ps] for w, ps in chance.items()},
              "checkpoint": clip.info and {k: v for k, v in clip.info.items() if k != "thresholds"},
              "seconds": round(time.perf_counter() - start, 1)}
    print(write_results("clip", result, markdown_table(result), args.out))


def markdown_table(r) -> str:
    info = r["checkpoint"]
    lines = [f"Measured on {r['heldout']:,} held-out digits.", "",
             "| measure | held-out |", "|---|---|",
             f"| zero-shot top-1, one prompt per class (\"a handwritten seven\") | {100 * r['zero_shot_top1']:.2f}% |",
             f"| linear probe (logistic regression on the image embeddings) | {100 * r['linear_probe']:.2f}% |",
             f"| \"a thick/thin <digit>\": top-{r['k']} precision, 19 seen combinations, mean (min) | "
             f"{100 * r['thickness_retrieval_seen_mean']:.0f}% ({100 * r['thickness_retrieval_seen_min']:.0f}%) |",
             f"| \"a {r['held_out_combination']}\" (never in a training caption) | "
             f"{100 * r['held_out_combination_precision']:.0f}% |", "",
             f"Top-{r['k']} retrieval precision for \"a <word> <digit>\" (right digit *and* right measured "
             "attribute), and chance: the share of held-out digits of that class that measure so (the thirds were "
             "cut on the training pool, so chance is not exactly a third):", "",
             "| word | " + " | ".join(str(d) for d in range(10)) + " |", "|---" * 11 + "|"]
    for word, ps in r["retrieval"].items():
        lines.append(f"| {word} | " + " | ".join(f"{100 * p:.0f}" for p in ps) + " |")
        lines.append(f"| chance, {word} | " + " | ".join(f"{100 * p:.0f}" for p in r["chance"][word]) + " |")
    lines += ["", f"Checkpoint: {info.get('steps', '?')} training steps, {info.get('train_seconds', '?')} s on "
              f"{info.get('hardware', '?')}; trained by `{info.get('script', '?')}`"
              + ("." if info.get("script", "").startswith("scripts/train.py") else
                 " (a script since folded into `scripts/train.py clip`, the same recipe).")]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
