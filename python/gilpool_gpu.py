"""GPU functions for examples/gpu_stage.rs (main interpreter only).

Each takes a gilpool ``DeviceArray`` (or any object with
``__cuda_array_interface__``) and computes on the GPU with CuPy, or with
PyTorch if CuPy is missing, returning a CUDA array (which has
``__cuda_array_interface__``, so gilpool's ``CudaVec`` brings it back).
GPU frameworks refuse own-GIL subinterpreters: run these on the main
interpreter (``Mode::SingleGil``).
"""


def _framework():
    try:
        import cupy

        return "cupy", cupy
    except ImportError:
        pass
    try:
        import torch

        if torch.cuda.is_available():
            return "torch", torch
    except ImportError:
        pass
    raise ImportError("gilpool_gpu needs CuPy or a CUDA build of PyTorch")


def framework():
    """The name of the framework these functions use ('cupy' or 'torch')."""
    return _framework()[0]


def scale(arr, factor):
    """``arr * factor + 1`` on the GPU, as a new CUDA array."""
    name, fw = _framework()
    if name == "cupy":
        return fw.asarray(arr) * factor + 1
    return fw.from_dlpack(arr) * factor + 1
