"""Every variant, one declaration each: its network, its defaults, whether it augments, its hooks.

Adding a variant is adding one declaration here (and a network builder to catsdogs.model.NETWORKS if it needs
a new one) and its tests; settings, help texts and the Run form read the list from here. The recipes' choices
were made on validation data and are measured in docs/results.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Network = Literal["reference", "xception", "efficientnet"]  # the builders in catsdogs.model.NETWORKS


@dataclass(frozen=True)
class VariantSpec:
    """One variant: what it trains and how, by default."""

    name: str
    summary: str  # a few words for help texts and the Run form
    network: Network
    defaults: dict[str, Any] = field(default_factory=dict)  # its values of the variant-dependent settings
    augments: bool = True  # random flips, rotations, zooms (and dropout) in training
    pretrained_base: bool = False  # a Keras application base: its weights file, frozen then fine-tuned epochs
    from_scratch_speedups: bool = False  # may grow its image size (resize_from), whiten its stem, warp once


# The reference variants keep the reference experiment's values exactly.
BASELINE = VariantSpec("baseline", "the reference convnet", "reference", {"epochs": 30}, augments=False)
AUGMENTED = VariantSpec("augmented", "the reference convnet with augmentation and dropout", "reference",
                        {"epochs": 100})
# AdamW, a cosine schedule after 3 warm-up epochs, label smoothing, MixUp and a moving average of the weights,
# test-time flips and centre crop: the book's accuracy in a third of its time on a CPU. Early stopping is only
# a safety net: the cosine schedule is meant to run to its end.
XCEPTION = VariantSpec(
    "xception", "from scratch, the book's network", "xception",
    {"epochs": 100, "image_size": 180, "precision": "auto", "optimizer": "adamw", "learning_rate": 2e-3,
     "lr_schedule": "cosine", "warmup_epochs": 3, "weight_decay": 0.05, "label_smoothing": 0.1, "mixup": 0.2,
     "ema": 0.995, "early_stopping_patience": 25, "tta_flip": True, "tta_crop": 0.8},
    from_scratch_speedups=True)
# xception's network and regularisers in a short budget: the first half at 96 px, growing to image_size by 85 %
# of the run (progressive resizing), and a stem initialised to whiten the training images' patches. 144 px cost
# a third less than 180 and scored higher for the same time; 120 epochs scored higher on validation than 90, and
# rotating and zooming in one warp (one_warp) higher still, in less time. Its cosine schedule runs to the end,
# where the best epochs were (83-90 of 90, 109-118 of 120), so only the last 15 are validated. Its weights are
# averaged over about 8 epochs (ema 0.998, 500 steps) instead of xception's 3: higher over its views for each of
# three seeds, and without the lean to cat that the shorter average had. Its evaluation and answers also average
# the images zoomed out to 0.89 (and mirrored): both ends of the training's zoom, six views, higher on validation
# for each seed measured. Its first two blocks convolve once (single_conv_blocks): about a fifth less work an
# epoch on the CPU without AVX-512, and higher over the validation views there for each of three seeds.
FAST = VariantSpec(
    "fast", "xception's network in a short budget", "xception",
    XCEPTION.defaults | {"epochs": 120, "image_size": 144, "warmup_epochs": 2, "early_stopping_patience": 0,
                         "resize_from": 96, "whiten_stem": True, "one_warp": True, "validate_last": 15, "ema": 0.998,
                         "tta_zoom_out": 0.89, "single_conv_blocks": 2},
    from_scratch_speedups=True)
# fast's recipe run longer: 400 epochs growing to 180 px, where each batch blends its images by MixUp or CutMix
# at random (a tie with MixUp alone on validation), rotated and zoomed in two warps, its weights averaged as
# fast's are (ema 0.998). 400 epochs scored higher over the validation views than 200 for each seed measured,
# with a lower validation loss; the longer average alone, at 200 epochs, was a tie. Its six views zoom out to
# 0.83 (1/1.2, the far end of RandomZoom(0.2)): the highest mean on validation over three seeds, against its
# four views and fast's six (zoomed out to 0.89). It keeps the book's blocks, as measured.
BEST = VariantSpec(
    "best", "from scratch, fast's recipe run longer", "xception",
    FAST.defaults | {"epochs": 400, "image_size": 180, "one_warp": False, "cutmix": 1.0, "tta_zoom_out": 0.83,
                     "single_conv_blocks": 0},
    from_scratch_speedups=True)
# The book's chapter 8: a frozen ImageNet base and a new head, then the top of the base at a low rate.
EFFICIENTNET = VariantSpec(
    "efficientnet", "a pretrained base", "efficientnet",
    {"epochs": 10, "image_size": 224, "precision": "auto", "optimizer": "adam", "learning_rate": 1e-3,
     "label_smoothing": 0.0, "early_stopping_patience": 5, "tta_flip": True, "fine_tune_epochs": 10,
     "fine_tune_layers": 40, "fine_tune_learning_rate": 1e-5},
    pretrained_base=True)

VARIANTS: dict[str, VariantSpec] = {spec.name: spec for spec in (BASELINE, AUGMENTED, XCEPTION, FAST, BEST,
                                                                  EFFICIENTNET)}


def variant_spec(name: str) -> VariantSpec:
    """The declaration of variant NAME; a KeyError naming the declared ones for any other."""
    try:
        return VARIANTS[name]
    except KeyError:
        raise KeyError(f"no variant {name!r} is declared in catsdogs.variants; declared: "
                       f"{', '.join(VARIANTS)}") from None


def variants_text() -> str:
    """The declared variants with their summaries, for help texts: "baseline (the reference convnet), ..."."""
    return ", ".join(f"{spec.name} ({spec.summary})" for spec in VARIANTS.values())
