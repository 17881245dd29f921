"""Import torchvision (and timm) on the CPU torch build, for the reference scripts only.

PyPI's torchvision wheels for torch 2.13 link against the CUDA build, so with
the CPU torch `import torchvision` fails with "operator torchvision::nms does
not exist". The models the tests need are pure Python: registering the two
missing op schemas before the import is enough. This stays out of kzoo.
"""


def import_torchvision():
    import torch

    try:
        import torchvision
    except (RuntimeError, ImportError):
        import sys

        for name in [n for n in sys.modules if n.startswith("torchvision")]:
            del sys.modules[name]
        lib = torch.library.Library("torchvision", "DEF")
        lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        lib.define("qnms(Tensor qdets, Tensor qscores, float iou_threshold) -> Tensor")
        import_torchvision.library = lib  # keep the schemas registered
        import torchvision
    return torchvision
