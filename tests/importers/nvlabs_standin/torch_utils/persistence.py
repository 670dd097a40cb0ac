"""Stand-in for NVlabs' persistence (ganrt tests): what loading a snapshot the NVlabs way does, in a few lines.

Each network object in a snapshot is stored as a call of ``_reconstruct_persistent_obj(meta)``, ``meta``
holding ``module_src`` (the Python source of the module that defined the class), ``class_name`` and
``state``. NVlabs' loader executes ``module_src``; so does this stand-in, which is why ganrt never calls it.
"""

import os
import types

import numpy as np


class Persistent:
    """A network object as data; pickles back to the call that made it (tests edit ``meta`` and re-pickle)."""

    def __init__(self, meta):
        self.meta = meta

    def __reduce__(self):
        return _reconstruct_persistent_obj, (self.meta,)


class Generator(Persistent):
    """Replays the NVlabs images stored beside the test snapshot, for the inputs they were drawn from."""

    def eval(self):
        return self

    def requires_grad_(self, flag=True):
        return self

    def float(self):
        return self

    def __call__(self, z, c, truncation_psi=1, truncation_cutoff=None, noise_mode="random", force_fp32=False):
        import torch

        stored = np.load(os.environ["GANRT_STANDIN_IMAGES"])
        psi = list(np.round(stored["truncation"], 4)).index(round(float(truncation_psi), 4))
        images = stored["images"][psi][: z.shape[0]].astype(np.float32)  # uint8 NHWC, drawn from seeds 0..
        x = torch.from_numpy(images).permute(0, 3, 1, 2) / 127.5 - 1.0
        return x + float(os.environ.get("GANRT_STANDIN_OFFSET", "0"))


def _reconstruct_persistent_obj(meta):
    module = types.ModuleType("_standin_module")
    exec(meta["module_src"], module.__dict__)  # what NVlabs' persistence does with the embedded source
    return Generator(meta) if meta["class_name"] == "Generator" else Persistent(meta)
