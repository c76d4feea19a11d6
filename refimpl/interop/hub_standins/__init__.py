"""Stand-ins for the two resamplers whose code ships only on the model hub: Qwen-VL's
(`visual.py`) and MiniCPM-V 2.5/2.6's (`resampler.py`), loaded there with trust_remote_code
and in no package. These are our own modules, not the hub's code: written from the published
description, layout-faithful (exactly the original's state-dict keys, constructor and forward),
so that refimpl.interop.qwen_vl and refimpl.interop.minicpm_v (their importers, compare's
driving, verify's `module_class`) can be tested, and notebook 11 run, without the hub.

    QwenVLResampler     Qwen-VL's Resampler (hub_standins.qwen_vl)
    MiniCPMVResampler   MiniCPM-V's Resampler (hub_standins.minicpm_v)
    sincos_table        their 2-D sin-cos table, computed as their code does, in float32 NumPy,
                        independently of refimpl.sincos_2d (hub_standins.sincos)

Both classes are named `Resampler`, as the originals are: refimpl.interop recognises a peer's
module by its class name and layout.
"""

from .minicpm_v import Resampler as MiniCPMVResampler
from .qwen_vl import Resampler as QwenVLResampler
from .sincos import sincos_table

__all__ = ["MiniCPMVResampler", "QwenVLResampler", "sincos_table"]
