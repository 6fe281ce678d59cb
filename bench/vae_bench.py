"""Measure notebook 03's shipped autoencoders on the held-out digits: python bench/vae_bench.py

* 2-D models: held-out -ELBO in nats per digit (VAE), 10-NN accuracy of the 2-D codes (fit on the
  training pool's codes), and, by the course's protocol (``metrics.quality_report``: 1,000 digits per seed against
  1,000 held-out digits, the floor at the same size, seeds 0 and 1), digits decoded from N(0, I), from the box
  holding 98% of the model's held-out codes, and reconstructions of the other 1,000 held-out digits.
* Spatial VAE (4 x 7 x 7): reconstruction MSE and PSNR, the shipped classifier's accuracy on the
  reconstructions (next to its accuracy on the originals), and the latent scaling factor.

Writes bench/results/vae.json and vae.md and refreshes the README between <!-- bench:vae --> markers.
About a minute on 2 CPU cores.
"""

import argparse
import time

import torch
from sklearn.neighbors import KNeighborsClassifier

from course_lib import pipelines, pretrained
from course_lib.data import load_mnist
from course_lib.metrics import load_classifier, predict, quality_report
from course_lib.vae import VAE, AutoEncoder, negative_elbo, psnr

from course_tools.bench import RESULTS, span, write_results


def generators(model, encode, heldout_images):
    """generate(seed, n) for ``metrics.quality_report``, three ways: decode N(0, I); decode uniform points of the box
    holding 98% of the held-out codes; reconstruct the n held-out digits the report does not use as its reference
    (it draws the reference as the first n of a permutation seeded with the seed, so these are the rest of it)."""
    z_heldout = encode(heldout_images)
    lo, hi = torch.quantile(z_heldout, 0.01, dim=0), torch.quantile(z_heldout, 0.99, dim=0)

    def prior(seed, n):
        return model.decode(torch.randn(n, 2, generator=torch.Generator().manual_seed(1000 * seed)))

    def box(seed, n):
        return model.decode(lo + (hi - lo) * torch.rand(n, 2, generator=torch.Generator().manual_seed(1000 * seed)))

    def reconstructions(seed, n):
        rest = torch.randperm(len(heldout_images), generator=torch.Generator().manual_seed(seed))[n:2 * n]
        return model.decode(encode(heldout_images[rest]))

    return {"standard_normal": prior, "code_box": box, "reconstructions": reconstructions}


@torch.no_grad()
def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=RESULTS)
    args = parser.parse_args()
    start = time.perf_counter()
    train, heldout = load_mnist("train"), load_mnist("test")
    classifier = load_classifier()
    result = {"heldout": len(heldout), "data": heldout.source, "num_samples": 1000, "seeds": [0, 1], "models": {}}

    for name, cls in [("ae2d", AutoEncoder), ("vae2d", VAE)]:
        model, info = pretrained.load_model(name, cls)
        encode = model.encode if cls is AutoEncoder else (lambda x: model.encode(x).mean)
        z_train, z_heldout = encode(train.images), encode(heldout.images)
        knn = KNeighborsClassifier(n_neighbors=10).fit(z_train.numpy(), train.labels.numpy())
        row = {"knn10_accuracy": round(knn.score(z_heldout.numpy(), heldout.labels.numpy()), 4),
               "train_steps": info["steps"], "train_seconds": info["train_seconds"]}
        for way, generate in generators(model, encode, heldout.images).items():
            report = quality_report(classifier, generate, heldout.images, train.images, result["num_samples"],
                                    seeds=result["seeds"])
            row[way] = {key: report[key] for key in ("ratio", "floor", "precision", "recall")}
        if cls is VAE:
            row["heldout_negative_elbo_nats"] = round(negative_elbo(model, heldout.images,
                                                                    torch.Generator().manual_seed(0)), 2)
        result["models"][name] = row

    vae = pipelines.load("vae", device="cpu")
    dist = vae.encode(heldout.images)
    rebuilt = vae.decode(dist.mean)
    latents = dist.sample(torch.Generator().manual_seed(0))
    result["models"]["vae"] = {
        "mse": round(torch.mean((rebuilt - heldout.images) ** 2).item(), 5),
        "psnr_db": round(psnr(rebuilt, heldout.images), 2),
        "classifier_accuracy_reconstructions": round((predict(classifier, rebuilt) == heldout.labels).float().mean().item(), 4),
        "classifier_accuracy_originals": round((predict(classifier, heldout.images) == heldout.labels).float().mean().item(), 4),
        "scaling_factor": round(vae.scaling_factor, 4),
        "heldout_scaled_latent_std": round((latents * vae.scaling_factor).std().item(), 4),
        "train_steps": vae.info["steps"], "train_seconds": vae.info["train_seconds"], "kl_weight": vae.info["kl_weight"]}
    result["seconds"] = round(time.perf_counter() - start, 1)
    print(write_results("vae", result, markdown_table(result), args.out))


def markdown_table(r) -> str:
    ae, v2, v = r["models"]["ae2d"], r["models"]["vae2d"], r["models"]["vae"]
    floor = [f for m in (ae, v2) for way in ("standard_normal", "code_box", "reconstructions") for f in m[way]["floor"]]

    def cells(m):
        return " | ".join(f"{span(m[way]['ratio'], '{:.1f}')} ({span(m[way]['precision'])} / {span(m[way]['recall'])})"
                          for way in ("standard_normal", "code_box", "reconstructions"))
    return "\n".join([
        f"Measured on the {r['heldout']:,} held-out digits by `python bench/vae_bench.py`. Decoded digits by the course's "
        f"protocol: {r['num_samples']:,} per seed, seeds {r['seeds']}, each against {r['num_samples']:,} held-out digits; "
        f"Fréchet distance over the real-vs-real floor ({span(floor, '{:.1f}')}), ranges over the seeds, then "
        "(precision / recall). Reconstructions are of the other held-out digits, not the reference.", "",
        "| 2-D model | 10-NN accuracy of the codes | held-out -ELBO | FD / floor, sampled from N(0, I) | "
        "FD / floor, sampled from its code box | FD / floor, reconstructions |",
        "|---|---|---|---|---|---|",
        f"| plain autoencoder | {ae['knn10_accuracy']:.1%} | – | {cells(ae)} |",
        f"| VAE | {v2['knn10_accuracy']:.1%} | {v2['heldout_negative_elbo_nats']:.1f} nats | {cells(v2)} |",
        "", "| spatial VAE, 4 x 7 x 7 | value |", "|---|---|",
        f"| reconstruction MSE / PSNR | {v['mse']:.4f} / {v['psnr_db']:.1f} dB |",
        f"| classifier accuracy: reconstructions / originals | {v['classifier_accuracy_reconstructions']:.2%} / "
        f"{v['classifier_accuracy_originals']:.2%} |",
        f"| scaling factor (measured on the training pool) / std of scaled held-out latents | "
        f"{v['scaling_factor']:.3f} / {v['heldout_scaled_latent_std']:.3f} |", ""]) + "\n"


if __name__ == "__main__":
    main()
