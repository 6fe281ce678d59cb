"""course_lib: the small shared library of *From Noise to Digits*.

Every notebook explains an idea and then imports its one true implementation
from here, so later notebooks build on exactly what earlier ones checked.

Modules, one concept each:

- ``device``   -- pick CPU / CUDA / Apple MPS once; seeding for reproducibility
- ``data``     -- MNIST as tensors, from whatever genuine source is available
- ``schedule`` -- beta schedules, alphas_cumprod, q_sample, SNR, posterior
- ``viz``      -- image grids, noise strips, the timestep slider
- ``checks``   -- self-checking exercises ("Correct!" / "Not yet" + hint)
- ``build``    -- execute the course to HTML, write student handouts
"""

__version__ = "0.1.0"
