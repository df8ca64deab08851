"""Learning CRF parameters on held-out data (DESIGN.md §3).

* :mod:`~crfcore.learn.data`: (image, fixed unary, ground truth) from a dataset folder, a seeded train/val split,
  random crops.
* :mod:`~crfcore.learn.finetune`: decoupled fine-tuning through inference (ConvCRF §5.2; "+C", "+T"), early stopping,
  resumable checkpoints.
* :mod:`~crfcore.learn.rough`: learning on rough polygon masks and brush strokes through
  :func:`crfcore.refine_mask`'s colour-model unary, its confidence, colour weight and prior width trained with the
  CRF, a grid over its roughness scale (``crfcore tune --protocol polygon|strokes``).
* :mod:`~crfcore.learn.piecewise_train`: piecewise training of the ``"piecewise"`` refiner's range-box potentials
  (Lin et al. 2016; the refiner itself is :mod:`crfcore.refiners.piecewise`).
* :mod:`~crfcore.learn.settings`: the training settings (defaults, ranges, help) the configs, ``crfcore tune``
  and the app's Fine-tune dialog read.
* :mod:`~crfcore.learn.curves`: CSV and PNG curves.

    >>> from crfcore import learn, refiners
    >>> data = learn.LearnData("../shared/data/voc", val_frac=0.3)                      # doctest: +SKIP
    >>> model = refiners.get("convcrf", learn_compat=True, num_classes=data.num_classes)  # doctest: +SKIP
    >>> result = learn.fine_tune(model, data)                                             # doctest: +SKIP
    >>> learn.save_result(result, "tuned.json")                                          # doctest: +SKIP
"""

from . import settings
from .curves import plot_png, write_csv
from .data import Batch, LearnData, Sample, split_stems
from .finetune import FinetuneConfig, TuneResult, fine_tune, prefer_unary, save_result, validate
from .piecewise_train import PiecewiseConfig, train_piecewise
from .rough import RoughData, RoughRecipe, tune_rough

__all__ = ["settings", "LearnData", "Sample", "Batch", "split_stems", "FinetuneConfig", "TuneResult", "fine_tune",
           "prefer_unary", "save_result", "validate", "PiecewiseConfig", "train_piecewise", "write_csv", "plot_png",
           "RoughRecipe", "RoughData", "tune_rough"]
