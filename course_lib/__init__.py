"""course_lib: the small shared library of *From Noise to Digits*.

Every notebook explains an idea and then imports its one true implementation
from here, so later notebooks build on exactly what earlier ones checked.

Modules, one concept each:

- ``device``   -- pick CPU / CUDA / Apple MPS once; seeding for reproducibility
- ``data``     -- MNIST as tensors, from whatever genuine source is available
- ``schedule`` -- beta schedules, alphas_cumprod, q_sample, SNR, posterior
- ``unet``, ``attention`` -- the noise-predicting U-Net, self- and cross-attention
- ``captions``, ``tokenizer``, ``clip`` -- captions from measured attributes, words to ids, CLIP
- ``ldm``      -- latent diffusion: training loss, classifier-free guidance, the text-to-image pipeline
- ``samplers`` -- DDPMScheduler and DDIMScheduler (``set_timesteps``, ``step``)
- ``train``    -- the one training loop: EMA, progress, resumable checkpoints
- ``vae``      -- autoencoder, VAE and the spatial VAE latent diffusion uses
- ``metrics``  -- the MNIST classifier, classifier-FID, class coverage
- ``pretrained``, ``recipes`` -- shipped weights with checksums, and how each was trained
- ``pipelines`` -- ``load("ddpm" | "vae" | "clip" | "ldm")``: one public way to use each shipped model
- ``viz``      -- image grids, noise strips, latent maps, loss curves, sliders
- ``checks``   -- self-checking exercises ("Correct!" / "Not yet" + hint)
- ``build``    -- execute the course to HTML, write student handouts
- ``friendly`` -- a cell run out of order says which earlier cell it needs
"""

__version__ = "0.1.0"

from . import friendly as _friendly

_friendly.install()      # only inside Jupyter/IPython; elsewhere it does nothing
