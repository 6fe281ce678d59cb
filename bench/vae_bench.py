"""Measure notebook 03's shipped autoencoders on the held-out digits: python bench/vae_bench.py

* 2-D models: held-out -ELBO in nats per digit (VAE), 10-NN accuracy of the 2-D codes (fit on the
  training pool's codes), and classifier-FID to the held-out digits of 2,000 digits decoded from
  N(0, I), from the box holding 98% of the model's held-out codes, and of the reconstructions.
* Spatial VAE (4 x 7 x 7): reconstruction MSE and PSNR, the shipped classifier's accuracy on the
  reconstructions (next to its accuracy on the originals), and the latent scaling factor.

Writes bench/results/vae.json and vae.md and refreshes the README between <!-- bench:vae --> markers.
About half a minute on 2 CPU cores.
"""

import argparse
import time

import torch
from sklearn.neighbors import KNeighborsClassifier

from course_lib import pipelines, pretrained
from course_lib.data import load_mnist
from course_lib.metrics import classifier_features, frechet_distance, load_classifier, predict
from course_lib.vae import VAE, AutoEncoder, negative_elbo, psnr

from course_tools.bench import ROOT, write_results


def sample_fids(model, heldout_z, fid, n=2000, seed=0):
    """Classifier-FID of n digits decoded from N(0, I) and from the box holding 98% of the held-out codes."""
    g = torch.Generator().manual_seed(seed)
    lo, hi = torch.quantile(heldout_z, 0.01, dim=0), torch.quantile(heldout_z, 0.99, dim=0)
    return (fid(model.decode(torch.randn(n, 2, generator=g))),
            fid(model.decode(lo + (hi - lo) * torch.rand(n, 2, generator=g))))


@torch.no_grad()
def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=ROOT / "bench" / "results")
    args = parser.parse_args()
    start = time.perf_counter()
    train, heldout = load_mnist("train"), load_mnist("test")
    classifier = load_classifier()
    heldout_features = classifier_features(classifier, heldout.images)

    def fid(images):
        return round(frechet_distance(classifier_features(classifier, images), heldout_features), 2)

    result = {"heldout": len(heldout), "data": heldout.source, "models": {}}

    for name, cls in [("ae2d", AutoEncoder), ("vae2d", VAE)]:
        model, info = pretrained.load_model(name, cls)
        encode = model.encode if cls is AutoEncoder else (lambda x: model.encode(x).mean)
        z_train, z_heldout = encode(train.images), encode(heldout.images)
        knn = KNeighborsClassifier(n_neighbors=10).fit(z_train.numpy(), train.labels.numpy())
        prior_fid, box_fid = sample_fids(model, z_heldout, fid)
        row = {"knn10_accuracy": round(knn.score(z_heldout.numpy(), heldout.labels.numpy()), 4),
               "fid_samples_from_standard_normal": prior_fid, "fid_samples_from_code_box": box_fid,
               "fid_reconstructions": fid(model.decode(z_heldout)),
               "train_steps": info["steps"], "train_seconds": info["train_seconds"]}
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
    return "\n".join([
        f"Measured on {r['heldout']:,} held-out digits by `python bench/vae_bench.py`; classifier-FID of 2,000 decoded "
        "digits to the held-out ones (lower = more like real digits).", "",
        "| 2-D model | 10-NN accuracy of the codes | held-out -ELBO | FID, sampled from N(0, I) | FID, sampled from its code box | FID, reconstructions |",
        "|---|---|---|---|---|---|",
        f"| plain autoencoder | {ae['knn10_accuracy']:.1%} | – | {ae['fid_samples_from_standard_normal']:.1f} | "
        f"{ae['fid_samples_from_code_box']:.1f} | {ae['fid_reconstructions']:.1f} |",
        f"| VAE | {v2['knn10_accuracy']:.1%} | {v2['heldout_negative_elbo_nats']:.1f} nats | "
        f"{v2['fid_samples_from_standard_normal']:.1f} | {v2['fid_samples_from_code_box']:.1f} | {v2['fid_reconstructions']:.1f} |",
        "", "| spatial VAE, 4 x 7 x 7 | value |", "|---|---|",
        f"| reconstruction MSE / PSNR | {v['mse']:.4f} / {v['psnr_db']:.1f} dB |",
        f"| classifier accuracy: reconstructions / originals | {v['classifier_accuracy_reconstructions']:.2%} / "
        f"{v['classifier_accuracy_originals']:.2%} |",
        f"| scaling factor (measured on the training pool) / std of scaled held-out latents | "
        f"{v['scaling_factor']:.3f} / {v['heldout_scaled_latent_std']:.3f} |", ""]) + "\n"


if __name__ == "__main__":
    main()
