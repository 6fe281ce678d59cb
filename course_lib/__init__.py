"""course_lib: the small shared library of *From Noise to Digits*.

Every notebook explains an idea and then imports its one true implementation
from here, so later notebooks build on exactly what earlier ones checked.

The package reads as a stack of floors, data and maths at the bottom, pipelines
at the top. A module imports only from floors below its own (``tests/test_imports.py``
walks every import and enforces it), so there is no cycle and no hidden import:

    6  recipes                                        how each shipped model is trained
       viz  checks  environment  friendly             for the notebooks, beside the stack
    5  pipelines  toy  step_search                    load(name): the shipped models; the 2-D toy; where to step
    4  ddpm  flow  ldm                                the generative systems: loss and pipeline
    3  unet  vae  clip  samplers  metrics  train      networks, schedulers, judges, the loop
    2  attention  tokenizer  pretrained               building blocks
    1  device  data  schedule  captions               digits, noise, words
    0  validate                                       argument checks and batching

- ``validate``  -- argument checks with sentences that name the argument; ``batched``
- ``device``    -- pick CPU / CUDA / Apple MPS once; seeding for reproducibility
- ``data``      -- MNIST as tensors: the shipped digits, one split on every machine
- ``schedule``  -- beta schedules, alphas_cumprod, q_sample, SNR, posterior; how training draws noise levels
- ``captions``  -- words measured on a digit's pixels: "a thick slanted seven"
- ``attention`` -- attention from scratch, self- and cross-attention blocks, ``record_attention``
- ``tokenizer`` -- words to ids, with a clear error for an unknown word
- ``pretrained``-- shipped weights: safetensors with SHA-256
- ``unet``      -- the noise-predicting U-Net (optionally text-conditioned)
- ``vae``       -- autoencoder, VAE and the spatial VAE latent diffusion uses
- ``clip``      -- the contrastive text and image encoders
- ``samplers``  -- DDPMScheduler, DDIMScheduler, DPMSolverMultistepScheduler (``set_timesteps``, ``step``)
- ``metrics``   -- the MNIST classifier, classifier-FID, class coverage
- ``train``     -- the one training loop: EMA, progress, resumable checkpoints
- ``ddpm``      -- pixel-space DDPM: training loss and ``DDPMPipeline``
- ``flow``      -- flow matching: straight paths, velocity loss, Euler/Heun schedulers, ``FlowMatchingPipeline``
- ``ldm``       -- latent diffusion: training loss, guidance, ``LatentDiffusionPipeline``
- ``pipelines`` -- ``load(name)``: one public way to use each shipped model
- ``toy``       -- diffusion vs flow matching on 2-D points: train in seconds, see the paths
- ``step_search``-- the few Euler noise levels that follow a model's own ODE best (searched, not guessed)
- ``recipes``   -- ``train_model(name)``: how each shipped model is made (``scripts/train.py``)
- ``viz``       -- image grids, noise strips, latent maps, loss curves, sliders
- ``checks``    -- self-checking exercises ("Correct!" / "Not yet" + hint)
- ``friendly``  -- ``friendly.install()``: a cell run out of order says which earlier cell it needs

The course's tooling (the HTML site, student handouts, benchmark results) is the separate
package ``course_tools``; nothing in ``course_lib`` imports it. Importing ``course_lib`` has
no side effects.
"""

__version__ = "0.1.0"
