"""Every setting of a catsdogs run, with its default, in one place.

Sources, highest precedence first: command-line flags, ``CATSDOGS_*`` environment variables, a TOML
file (``--config FILE`` or ``CATSDOGS_CONFIG``), then the defaults below.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from collections.abc import Iterable
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import (
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    create_model,
    field_serializer,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from catsdogs.variants import VARIANTS, VariantSpec, variants_text

# The public, no-login copy that Keras' own example and TensorFlow Datasets use (786 MB, PetImages layout).
DEFAULT_DATA_URL = (
    "https://download.microsoft.com/download/3/E/1/3E1C3F21-ECDB-4869-8368-6DEBA77B919F/"
    "kagglecatsanddogs_5340.zip"
)
# The reference convnet's four conv+pool blocks and last conv need at least this many pixels a side.
MIN_IMAGE_SIZE = 78
MAX_INDEX = 10_000_000  # an image position no archive reaches

# The declared variants' names (catsdogs/variants.py), as a type: validation and the JSON schema list them.
Variant = Literal[tuple(VARIANTS)]  # type: ignore[valid-type]
# float32 is the reference's math. The mixed policies compute the convolutions in 16 bits (weights stay
# float32): bfloat16 for CPUs with BF16 units (1.75-2.3x faster epochs measured on one), float16 for GPUs.
# auto picks mixed_float16 on a GPU, mixed_bfloat16 on a CPU with AVX-512 BF16 or AMX, else float32.
Precision = Literal["auto", "float32", "mixed_bfloat16", "mixed_float16"]
Optimizer = Literal["rmsprop", "adam", "adamw"]
Schedule = Literal["constant", "cosine"]

# Every setting whose default depends on the variant: each variant's declaration holds its values.
VARIANT_DEFAULTS: dict[str, dict[str, Any]] = {name: spec.defaults for name, spec in VARIANTS.items()}
# Defaults shared by every variant that VARIANT_DEFAULTS does not name: the reference experiment's.
COMMON_DEFAULTS: dict[str, Any] = {
    "image_size": 180, "precision": "float32", "optimizer": "rmsprop", "learning_rate": 1e-3,
    "lr_schedule": "constant", "warmup_epochs": 0, "weight_decay": 0.0, "label_smoothing": 0.0,
    "early_stopping_patience": 0, "tta_flip": False, "tta_crop": 0.0, "tta_zoom_out": 0.0, "translate": 0.0,
    "mixup": 0.0, "cutmix": 0.0, "ema": 0.0, "dropout": 0.5,
    "resize_from": 0, "whiten_stem": False, "patch_stem": False, "single_conv_blocks": 0, "one_warp": False,
    "alternating_flips": False, "validate_last": 0, "fine_tune_epochs": 0,
    "fine_tune_layers": 0, "fine_tune_learning_rate": 1e-5,
}
# Settings that change the trained model beyond variant, epochs, batch size and seed. A run's key names them
# only where they differ from the reference, so reference runs keep the folders they had.
RECIPE_FIELDS = ("precision", "translate", "mixup", "cutmix", "ema", "dropout", "resize_from", "whiten_stem",
                 "patch_stem", "single_conv_blocks", "one_warp", "alternating_flips", "validate_last",
                 "optimizer", "learning_rate", "lr_schedule", "warmup_epochs", "weight_decay", "label_smoothing",
                 "early_stopping_patience", "fine_tune_epochs", "fine_tune_layers",
                 "fine_tune_learning_rate", "backbone_weights")
BACKBONE_FIELDS = ("fine_tune_epochs", "fine_tune_layers", "fine_tune_learning_rate", "backbone_weights")


def listed(names: list[str]) -> str:
    """NAMES as a sentence lists them: "a", "a and b", "a, b and c"."""
    return f"{', '.join(names[:-1])} and {names[-1]}" if len(names) > 1 else "".join(names)


def defaults_text(name: str) -> str:
    """The defaults of setting NAME, from the variants' declarations: "(default: 0.001; fast and xception 0.002)"."""
    def shown(value: Any) -> str:
        return {True: "on", False: "off"}.get(value, str(value)) if isinstance(value, bool) else str(value)

    common = COMMON_DEFAULTS.get(name)
    own: dict[str, list[str]] = {}
    for variant, spec in VARIANTS.items():
        if spec.defaults.get(name, common) != common:
            own.setdefault(shown(spec.defaults[name]), []).append(variant)
    shown_own = "; ".join(f"{listed(names)} {value}" for value, names in own.items())
    if common is None:
        return f"(default: {shown_own})"
    return f"(default: {shown(common)}{'; ' + shown_own if shown_own else ''})"


def variant_defaults(variant: str) -> dict[str, Any]:
    """The value each variant-dependent setting takes for VARIANT when it is left unset (an undeclared variant
    takes the common ones: the variant field's own check then names it)."""
    return COMMON_DEFAULTS | VARIANT_DEFAULTS.get(variant, {})


class SettingsError(ValueError):
    """A setting has a value that is not allowed; the message names the field and the fix."""


def _parse_range(value: Any) -> Any:
    """Accept "0-999", "0:999", "0,999" or a two-item list; both ends inclusive."""
    if isinstance(value, str):
        match = re.fullmatch(r"\s*\[?\s*(\d+)\s*[-:,]\s*(\d+)\s*\]?\s*", value)
        if not match:
            raise ValueError(f"expected FIRST-LAST such as 0-999, got {value!r}")
        return (int(match[1]), int(match[2]))
    return value


IndexRange = Annotated[tuple[int, int], NoDecode]


class Settings(BaseSettings):
    """What to train and how; a run is fully described by these values."""

    # allow_inf_nan: no setting means anything as inf or nan (a retry delay of nan sleeps forever).
    model_config = SettingsConfigDict(env_prefix="CATSDOGS_", extra="forbid", validate_assignment=True,
                                      allow_inf_nan=False)
    _given: frozenset[str] | None = PrivateAttr(None)  # see the given property

    variant: Variant = Field("baseline", description=f"the network and its recipe: {variants_text()}")
    data_url: str = Field(DEFAULT_DATA_URL, description="archive to download: http(s):// or file:// URL")
    data_sha256: str | None = Field(None, description="expected SHA-256 of the archive; checked when given")
    data_url_secret: str | None = Field(None, description="name of a Prefect Secret block holding the full "
                                        "data URL, for one with credentials (kept out of flow parameters)")
    workdir: Path = Field(Path("catsdogs-work"), description="where downloads, datasets and runs are kept")
    # Positions among the valid images of each class, both ends inclusive: the reference experiment's split.
    train_range: IndexRange = Field((0, 999), description="training images per class, FIRST-LAST")
    validation_range: IndexRange = Field((1000, 1499), description="validation images per class")
    test_range: IndexRange = Field((1500, 2499), description="test images per class")
    image_size: int | None = Field(None, description=f"square input size in pixels, at least {MIN_IMAGE_SIZE} "
                                   f"{defaults_text('image_size')}")
    batch_size: int = Field(32, ge=1, le=4096, description="images per training step")
    epochs: int | None = Field(None, description="epochs to train, before any fine-tuning "
                                                 f"{defaults_text('epochs')}")
    seed: int = Field(0, ge=0, le=2**32 - 1, description="seeds shuffling, initial weights and augmentation")
    download_retries: int = Field(3, ge=0, le=20, description="retries of a transient download failure")
    download_backoff_s: float = Field(2.0, ge=0, le=3600, description="first retry delay; doubles each retry")
    download_timeout_s: float = Field(60.0, gt=0, le=86_400, description="connect and read timeout of the "
                                      "download")
    # Speed on the CPU: applied before TensorFlow starts; they change no math, only how it is scheduled.
    threads: int | None = Field(None, ge=1, le=1024, description="TensorFlow threads; default: all cores")
    onednn: bool = Field(True, description="TensorFlow's oneDNN kernels: on unless --no-onednn "
                         "(TensorFlow alone leaves them off on many CPUs)")
    # Unlike the two above, this one changes the math (rounding), so it is part of a trained model's key.
    precision: Precision | None = Field(None, description="auto, float32, mixed_bfloat16 (CPUs with AVX-512 "
                                        f"BF16/AMX) or mixed_float16 (GPUs) {defaults_text('precision')}")
    # The training recipe. Unset values take the variant's (VARIANT_DEFAULTS above).
    optimizer: Optimizer | None = Field(None, description=f"rmsprop (the reference), adam or adamw "
                                        f"{defaults_text('optimizer')}")
    learning_rate: float | None = Field(None, gt=0, le=1, description=f"peak learning rate "
                                        f"{defaults_text('learning_rate')}")
    lr_schedule: Schedule | None = Field(None, description="constant (the reference) or cosine decay to 0")
    warmup_epochs: int | None = Field(None, ge=0, le=1000, description="epochs of linear warm-up (cosine only)")
    weight_decay: float | None = Field(None, ge=0, le=1, description="decoupled weight decay (adamw only)")
    label_smoothing: float | None = Field(None, ge=0, lt=0.5, description="binary label smoothing in training "
                                          f"{defaults_text('label_smoothing')}")
    early_stopping_patience: int | None = Field(None, ge=0, le=10_000, description="stop after this many epochs "
                                                "without a lower validation loss; 0 = off (the reference)")
    tta_flip: bool | None = Field(None, description="average each image's score with its mirror image's "
                                  f"in evaluation and prediction {defaults_text('tta_flip')}")
    tta_crop: float | None = Field(None, description="also average with the centre crop of this fraction of "
                                   "each side, resized back (and its mirror image where tta_flip is on); 0 = off "
                                   f"{defaults_text('tta_crop')}")
    tta_zoom_out: float | None = Field(None, description="also average with the image shrunk to this fraction of "
                                       "each side, its border filled by reflection as the training's zoom fills it "
                                       "(and its mirror image where tta_flip is on); 0 = off "
                                       f"{defaults_text('tta_zoom_out')}")
    translate: float | None = Field(None, ge=0, le=0.5, description="augmentation: also shift images by up to "
                                    "this fraction each way (0 = the reference's flips, rotation and zoom only)")
    mixup: float | None = Field(None, ge=0, le=10, description="MixUp: blend pairs of training images and their "
                                "labels with a Beta(alpha, alpha) weight of this alpha; 0 = off, the reference "
                                f"{defaults_text('mixup')}")
    cutmix: float | None = Field(None, ge=0, le=1, description="CutMix: paste a box of another training image "
                                 "into each, the labels mixed by the box's area (a Beta(a, a) share, a drawn up to "
                                 "this value: Keras' CutMix factor); with mixup too, each batch takes one of the "
                                 f"two at random; 0 = off {defaults_text('cutmix')}")
    ema: float | None = Field(None, ge=0, lt=1, description="keep a moving average of the weights with this "
                              "momentum; validation, checkpoints and the saved model use it; 0 = off "
                              f"{defaults_text('ema')}")
    dropout: float | None = Field(None, ge=0, lt=1, description="the rate of the dropout before the output layer "
                                  f"(the baseline has none) {defaults_text('dropout')}")
    # Speed-ups of the from-scratch networks (xception, fast, best).
    resize_from: int | None = Field(None, ge=0, le=1024, description="progressive resizing: train the first "
                                    "half of the epochs at this many pixels a side, then growing to image_size "
                                    "by 85 % of the run; validation and prediction use image_size; 0 = off "
                                    f"{defaults_text('resize_from')}")
    whiten_stem: bool | None = Field(None, description="initialise the first convolution to whiten the "
                                     "training images' patches (their covariance's eigenvectors) "
                                     f"{defaults_text('whiten_stem')}")
    patch_stem: bool | None = Field(None, description="a 4x4 stride-4 first convolution (one vector per 4x4 "
                                    "patch) in place of the 5x5 stride-2 one and the first block: the blocks start "
                                    f"on a quarter of the pixels {defaults_text('patch_stem')}")
    single_conv_blocks: int | None = Field(None, ge=0, le=5, description="how many of the residual blocks (five; "
                                           "four with patch_stem), from the first, convolve once instead of "
                                           "twice: less work on the largest maps; 0 = the book's blocks "
                                           f"{defaults_text('single_conv_blocks')}")
    one_warp: bool | None = Field(None, description="augmentation: rotate and zoom in one affine warp instead of "
                                  "the reference's two layers (the same random rotations and zooms, one pass of "
                                  f"sampling) {defaults_text('one_warp')}")
    alternating_flips: bool | None = Field(None, description="augmentation: mirror each training image in every "
                                           "other epoch (a random half in the first) instead of at random in "
                                           "each, so no image goes unmirrored for long "
                                           f"{defaults_text('alternating_flips')}")
    validate_last: int | None = Field(None, ge=0, le=10_000, description="validate, and so keep checkpoints, "
                                      "only in the last this many epochs (with a schedule that runs to its end "
                                      "the best epoch is a late one): each skipped validation pass is time "
                                      f"saved; 0 = every epoch, the reference {defaults_text('validate_last')}")
    # efficientnet only.
    backbone_weights: str = Field("imagenet", description="efficientnet's base: imagenet (Keras' download, or "
                                  "its cache), a local .h5/.weights.h5 file, or random (untrained, for tests)")
    fine_tune_epochs: int | None = Field(None, ge=0, le=10_000, description="efficientnet: epochs that then "
                                         "train the top of the base too (0 = off)")
    fine_tune_layers: int | None = Field(None, ge=0, le=10_000, description="efficientnet: base layers to unfreeze")
    fine_tune_learning_rate: float | None = Field(None, gt=0, le=1, description="efficientnet: fine-tuning rate")
    max_extract_gib: float = Field(20.0, gt=0, le=1_000_000, description="refuse archives that unpack to more "
                                   "than this")
    # What a finished run does about the champion (the model predict, web and score-folder use): compare
    # with it on this run's test images, then never promote, promote when better by promote_margin, or ask a
    # person in the Prefect UI. Scheduled deployments state theirs.
    promote: Literal["never", "if-better", "ask"] = Field(
        "never", description="after the run: never promote the new model to champion, promote it if-better by "
        "promote_margin, or ask in the Prefect UI")
    promote_margin: float = Field(0.005, ge=0, le=1, description="test accuracy the new model must gain over the "
                                  "champion for promote=if-better")

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource, **_unused: PydanticBaseSettingsSource,
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Flags (init values) beat CATSDOGS_* variables, which beat the TOML file load_settings was given."""
        toml = _TOML_FILE.get()
        if toml is None:
            return init_settings, env_settings
        return init_settings, env_settings, TomlConfigSettingsSource(settings_cls, toml[0], toml_table_header=toml[1])

    @field_serializer("data_url", when_used="json")
    def _masked_url(self, url: str) -> str:
        """Flow parameters, saved settings and cards hold the URL with its credentials masked (see resolve)."""
        return redact_url(url)

    @model_validator(mode="before")
    @classmethod
    def _variant_defaults(cls, data: Any) -> Any:
        """Fill every unset variant-dependent setting with its variant's value."""
        if not isinstance(data, dict):
            return data
        variant = data.get("variant") or "baseline"
        # Not a name (a list from a TOML file, say): the variant field's own check names the problem.
        defaults = variant_defaults(variant if isinstance(variant, str) else "baseline")
        return data | {name: value for name, value in defaults.items() if data.get(name) is None}

    @field_validator("*", mode="before")
    @classmethod
    def _strict_types(cls, value: Any, info: ValidationInfo) -> Any:
        """No bool where a number or text is meant: lax pydantic takes epochs = true as 1."""
        annotation = str(cls.model_fields[str(info.field_name)].annotation)
        if isinstance(value, bool) and "bool" not in annotation:
            raise ValueError(f"expected {'a number' if 'int' in annotation or 'float' in annotation else 'text'}"
                             f", got {str(value).lower()}")
        return value

    @field_validator("workdir", mode="before")
    @classmethod
    def _workdir(cls, value: Any) -> Any:
        if isinstance(value, str | Path) and not str(value).strip():  # Path("") is the current folder
            raise ValueError("must not be empty; give a folder such as catsdogs-work (or leave it unset)")
        return value

    @field_validator("train_range", "validation_range", "test_range", mode="before")
    @classmethod
    def _range(cls, value: Any) -> Any:
        return _parse_range(value)

    @field_validator("train_range", "validation_range", "test_range")
    @classmethod
    def _ordered(cls, value: tuple[int, int]) -> tuple[int, int]:
        first, last = value
        if first < 0 or last < first or last > MAX_INDEX:
            raise ValueError(f"a range is FIRST-LAST with 0 <= FIRST <= LAST <= {MAX_INDEX:,}, got {first}-{last}")
        return value

    @field_validator("image_size")
    @classmethod
    def _image_size(cls, value: int) -> int:
        if not MIN_IMAGE_SIZE <= value <= 1024:
            raise ValueError(f"images must be from {MIN_IMAGE_SIZE} to 1024 pixels a side ({MIN_IMAGE_SIZE}: the "
                             f"smallest the reference convnet's layers take, and the least any variant is trained "
                             f"at), got {value}")
        return value

    @field_validator("tta_crop", "tta_zoom_out")
    @classmethod
    def _tta_fraction(cls, value: float | None, info: ValidationInfo) -> float | None:
        if value is not None and value != 0 and not 0.5 <= value < 1:
            view = "a centre crop keeps" if info.field_name == "tta_crop" else "zooming out shrinks the image to"
            raise ValueError(f"{view} a fraction of each side from 0.5 to below 1 (0 = off), got {value}")
        return value

    @field_validator("resize_from", "whiten_stem", "patch_stem", "single_conv_blocks", "one_warp", "alternating_flips")
    @classmethod
    def _from_scratch_speedups(cls, value: Any, info: ValidationInfo) -> Any:
        variant, size = info.data.get("variant"), info.data.get("image_size")
        if value and not (variant in VARIANTS and VARIANTS[variant].from_scratch_speedups):
            able = listed([name for name, spec in VARIANTS.items() if spec.from_scratch_speedups])
            raise ValueError(f"for the {able} networks, not {variant}; leave it unset (0 or false)")
        if info.field_name == "resize_from" and value and size and not 32 <= value <= size:
            raise ValueError(f"the first epoch's size must be from 32 to image_size ({size}) pixels, or 0 for "
                             f"off; got {value}: give --resize-from 0 or at most {size}, or --image-size {value} or "
                             "more")
        return value

    @field_validator("dropout")
    @classmethod
    def _dropout(cls, value: float | None, info: ValidationInfo) -> float | None:
        variant = info.data.get("variant")
        if value is not None and value != COMMON_DEFAULTS["dropout"] and variant in VARIANTS \
                and not VARIANTS[variant].augments:
            raise ValueError(f"the {variant} network has no dropout layer (the reference's augmented one has); "
                             "leave it unset")
        return value

    @field_validator("epochs")
    @classmethod
    def _epochs(cls, value: int | None) -> int | None:
        if value is not None and not 1 <= value <= 10_000:
            raise ValueError(f"epochs must be between 1 and 10000, got {value}")
        return value

    @field_validator("data_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not re.match(r"(?i)^(https?|file)://", value):
            raise ValueError(
                f"expected an http://, https:// or file:// URL, got {redact_url(value)!r}; "
                "for a local archive use file:///absolute/path/train.zip"
            )
        problem = _url_problem(value)
        if problem:  # refused here, in a second, rather than by the download after Prefect and a flow run start
            raise ValueError(f"{redact_url(value)} is not a valid URL: {problem}; check --data-url")
        return value

    @field_validator("data_sha256")
    @classmethod
    def _sha(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        if not re.fullmatch(r"[0-9a-fA-F]{64}", value):
            raise ValueError("expected 64 hexadecimal digits (the output of sha256sum)")
        return value.lower()

    @model_validator(mode="after")
    def _disjoint_subsets(self) -> Settings:
        ranges = {"train_range": self.train_range, "validation_range": self.validation_range,
                  "test_range": self.test_range}
        names = list(ranges)
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                (a0, a1), (b0, b1) = ranges[a], ranges[b]
                if a0 <= b1 and b0 <= a1:
                    raise ValueError(
                        f"{a} {a0}-{a1} overlaps {b} {b0}-{b1}: an image must not be in two subsets"
                    )
        return self

    @property
    def epochs_to_run(self) -> int:
        """The epochs of this run (with the base frozen, for efficientnet)."""
        return int(self.epochs)  # type: ignore[arg-type]  # filled from the variant's defaults

    @property
    def total_epochs(self) -> int:
        """Every epoch of this run, fine-tuning included."""
        return self.epochs_to_run + (int(self.fine_tune_epochs or 0) if self.spec.pretrained_base else 0)

    @property
    def spec(self) -> VariantSpec:
        """The declaration of this run's variant (catsdogs/variants.py)."""
        return VARIANTS[self.variant]

    def with_overrides(self, overrides: dict[str, Any] | None, given: Iterable[str] | None = None) -> Settings:
        """These settings with some changed (a deployment run's partial override, a sweep's configuration).

        A value that is only its variant's default is left to the new variant's default, so a changed variant
        brings its own recipe; a value someone gave (GIVEN, or the names load_settings recorded) stays, even
        where it equals the old variant's default: `--variant baseline,augmented --epochs 30` trains both 30.

        Raises SettingsError naming each invalid field.
        """
        if not overrides:
            return self
        defaults = variant_defaults(self.variant)
        keep = set(given if given is not None else self.given or ())
        kept = {name: value for name, value in self.model_dump().items()
                if name not in defaults or name in keep or value != defaults[name]}
        try:
            return Settings.model_validate(kept | overrides)
        except ValidationError as err:
            raise SettingsError(format_validation_error(err)) from None

    @property
    def given(self) -> frozenset[str] | None:
        """The settings someone gave (flags, CATSDOGS_* variables, the TOML file), where load_settings built these;
        None where that is not known (settings rebuilt from their values, as flow parameters are)."""
        return self._given

    def applies(self, name: str) -> bool:
        """Whether setting NAME changes what this run trains: backbone settings need a backbone, warm-up the cosine
        schedule, decoupled weight decay AdamW (compile_model). Where one does not, it names no run and keys no
        folder: a sweep may give it to every variant, and an identical model is not trained twice."""
        if name in BACKBONE_FIELDS:
            return self.spec.pretrained_base
        return {"warmup_epochs": self.lr_schedule == "cosine", "weight_decay": self.optimizer == "adamw"}.get(name,
                                                                                                          True)

    def recipe_key(self) -> dict[str, Any]:
        """The recipe settings that differ from the reference's: part of a trained model's cache key."""
        names = [n for n in RECIPE_FIELDS if self.applies(n)]
        return {name: getattr(self, name) for name in names
                if getattr(self, name) != COMMON_DEFAULTS.get(name, Settings.model_fields[name].default)}

    def changed_from_variant(self) -> dict[str, Any]:
        """The recipe settings (and batch size and the test-time views) that differ from this variant's defaults:
        what tells two runs of one variant, size and seed apart."""
        defaults = variant_defaults(self.variant)
        names = [n for n in ("batch_size", *RECIPE_FIELDS, "tta_flip", "tta_crop", "tta_zoom_out") if n != "precision"
                 and self.applies(n)]
        return {name: getattr(self, name) for name in names
                if getattr(self, name) != defaults.get(name, Settings.model_fields[name].default)}

    def public_dict(self) -> dict[str, Any]:
        """The settings as JSON-ready values, with credentials in the data URL masked."""
        data = self.model_dump(mode="json")
        data["data_url"] = redact_url(self.data_url)
        return data


def redact_url(url: str) -> str:
    """The URL as logs, errors, artifacts and flow parameters show it: parsed, with its user info, query values
    (and query words without a value) and fragment masked. A URL that does not parse cleanly (control characters
    or spaces, a bad port or host) is masked whole: no part of it can be trusted not to hold a secret."""
    if not isinstance(url, str) or re.search(r"[\x00-\x20\x7f]", url) or _url_problem(url):
        return MASK
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    netloc = f"{MASK}@{host}" if "@" in parts.netloc else host
    query = "&".join(_masked_pair(piece) for piece in re.split(r"[&;]", parts.query)) if parts.query else ""
    fragment = MASK if parts.fragment else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, fragment))


def _url_problem(url: str) -> str | None:
    """Why URL does not parse as a URL any download could use, in words that quote none of it (a port or host
    that does not parse may be a password, as in http://user:password/...); None when it parses. The settings
    refuse such a URL, and redact_url masks it whole."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "a host in [brackets] is not a valid IPv6 address"
    try:
        parts.port  # noqa: B018  raises ValueError for a port that is not a number in range
    except ValueError:
        return "its port is not a number from 0 to 65535"
    if "://" in url and parts.scheme.lower() != "file" and not parts.hostname:
        return "it names no host"
    return None


def _masked_pair(piece: str) -> str:
    """One query item: a plain key keeps its name (token=***); a bare word or an odd key is masked whole."""
    key, equals, _ = piece.partition("=")
    return f"{key}={MASK}" if equals and re.fullmatch(r"[A-Za-z0-9_.\-\[\]]{1,64}", key) else MASK


MASK = "***"
DATA_URL_ENV = "CATSDOGS_DATA_URL"


def unmask_data_url(url: str, secret_url: str | None = None) -> str:
    """The full data URL for URL as flow parameters hold it (credentials masked as ***).

    The full URL comes from SECRET_URL (say, a Prefect Secret block's value) or else the CATSDOGS_DATA_URL
    environment variable, and must be the same URL once masked. A URL without a mask is returned as it is.
    """
    if MASK not in url:
        return url
    for candidate, source in ((secret_url, "the secret"), (os.environ.get(DATA_URL_ENV), DATA_URL_ENV)):
        if candidate and redact_url(candidate) == url:
            return candidate
        if candidate:
            raise SettingsError(f"invalid setting data_url: {source} holds a URL other than {url}; make them agree")
    raise SettingsError(
        f"invalid setting data_url: {url} has its credentials masked, as flow parameters keep them; give the "
        f"full URL in {DATA_URL_ENV} where the flow runs, or in a Prefect Secret block named by data_url_secret")


# CATSDOGS_ variables that are not settings: the config file's path, and the test suite's switch.
OTHER_VARIABLES = {"CATSDOGS_CONFIG", "CATSDOGS_REQUIRE_BROWSER"}


def _named_where_set(lines: str, overrides: dict[str, Any]) -> str:
    """Each "invalid setting NAME: ..." line of LINES for a setting no flag gave but the environment did, with
    the variable named: CATSDOGS_EPOCHS=abc is fixed in the shell, not on the command line."""
    def named(line: str) -> str:
        found = re.match(r"invalid setting (\w+): ", line)
        variable = f"CATSDOGS_{found[1].upper()}" if found else ""
        if found and found[1] not in overrides and variable in os.environ:
            return f"{line} (from {variable} in the environment)"
        return line

    return "\n".join(named(line) for line in lines.splitlines())


def check_environment_names() -> None:
    """Raise SettingsError for a CATSDOGS_ variable that names no setting: a typo (CATSDOGS_EPOCH=5) was ignored,
    and the run trained with the default, where the same typo in a TOML file is refused."""
    known = {f"CATSDOGS_{name.upper()}" for name in Settings.model_fields} | OTHER_VARIABLES
    for name in sorted(os.environ):
        if name.upper().startswith("CATSDOGS_") and name.upper() not in known:
            close = difflib.get_close_matches(name.upper(), sorted(known), n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            raise SettingsError(f"unknown setting {name} in the environment: {hint}unset it, or name a setting "
                                "(catsdogs run --help lists them)")


def load_settings(overrides: dict[str, Any] | None = None, config_file: str | Path | None = None) -> Settings:
    """Build Settings from flags (overrides), environment and an optional TOML file, merged by
    pydantic-settings' own sources in that order of precedence.

    Raises SettingsError with one line per invalid field.
    """
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    check_environment_names()
    config_file = config_file or os.environ.get("CATSDOGS_CONFIG")
    toml = None
    if config_file:
        path = Path(config_file)
        header = ("catsdogs",) if "catsdogs" in read_toml(path) else ()  # flat, or under a [catsdogs] table
        toml = (path, header)
    token = _TOML_FILE.set(toml)
    try:
        settings = Settings(**overrides)
    except ValidationError as err:
        raise SettingsError(_named_where_set(format_validation_error(err), overrides)) from None
    finally:
        _TOML_FILE.reset(token)
    table = read_toml(toml[0]) if toml else {}
    from_file = set(table.get("catsdogs", {}) if toml and toml[1] else table)
    from_environment = {name for name in Settings.model_fields if f"CATSDOGS_{name.upper()}" in os.environ}
    settings._given = frozenset(set(overrides) | from_environment | (from_file & set(Settings.model_fields)))
    return settings


# What a training deployment's Run form offers: what a person changes for one run. Where things live (workdir,
# the data source) and how the machine runs (threads, precision) come from the serving side's own settings, its
# CATSDOGS_* environment and config file, so that a form can never point a run at other data or another folder.
CHOICE_FIELDS = ("variant", "epochs", "seed", "image_size", "batch_size", "learning_rate", "label_smoothing",
                 "mixup", "ema", "tta_flip", "promote", "promote_margin")


def _choice(name: str) -> tuple[Any, Any]:
    field = Settings.model_fields[name]
    return field.annotation | None, Field(None, description=f"{field.description}. Empty: as the serving side sets it")


# Strict: the form sends JSON types, and a bool is no number of epochs. Extra fields are refused, not ignored.
RunChoices = create_model(
    "RunChoices", __config__=ConfigDict(extra="forbid", strict=True),
    __doc__="A training run's choices in the Run form; the rest of its settings are the deployment's.",
    **{name: _choice(name) for name in CHOICE_FIELDS})


def settings_for_choices(choices: Any) -> Settings:
    """The serving side's settings (its CATSDOGS_* environment and config file) with a Run form's CHOICES on top.

    Raises SettingsError naming each choice that is not allowed.
    """
    if not isinstance(choices, RunChoices):
        if unknown := sorted(set(choices or {}) - set(CHOICE_FIELDS)):
            raise SettingsError(f"{', '.join(unknown)}: not a choice of a run (those are {', '.join(CHOICE_FIELDS)}); "
                                "where runs train and the data they read are the serving side's: set "
                                "CATSDOGS_WORKDIR and CATSDOGS_DATA_URL where `catsdogs serve` or the worker runs")
        try:
            choices = RunChoices.model_validate(choices or {})
        except ValidationError as err:
            raise SettingsError(format_validation_error(err)) from None
    return load_settings(choices.model_dump(exclude_none=True))


# The TOML file of the Settings being built by load_settings (and its table), for settings_customise_sources.
_TOML_FILE: ContextVar[tuple[Path, tuple[str, ...]] | None] = ContextVar("catsdogs_toml_file", default=None)


def read_toml(path: Path) -> dict[str, Any]:
    """The file's TOML, or a SettingsError that names what is wrong with it (before pydantic-settings reads it)."""
    try:
        values = tomllib.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise SettingsError(f"config file {path} does not exist; fix the --config path (or CATSDOGS_CONFIG)") \
            from None
    except IsADirectoryError:
        raise SettingsError(f"config file {path} is a directory; give the path of a .toml file") from None
    except UnicodeDecodeError as err:
        raise SettingsError(f"config file {path} is not UTF-8 text (byte {err.start}); save it as UTF-8 "
                            "TOML") from None
    except OSError as err:
        raise SettingsError(f"config file {path} cannot be read: {err.strerror or err}") from None
    except tomllib.TOMLDecodeError as err:
        raise SettingsError(f"config file {path} is not valid TOML: {err}") from None
    if "catsdogs" in values and not isinstance(values["catsdogs"], dict):
        raise SettingsError(f"config file {path}: catsdogs must be a table of settings")
    return values


# Pydantic's errors of a number out of range or not a number: their input is shown (no secret is a number).
_NUMBER_ERRORS = frozenset({"greater_than", "greater_than_equal", "less_than", "less_than_equal", "multiple_of",
                            "finite_number", "float_parsing", "int_parsing", "int_from_float"})


def format_validation_error(err: ValidationError) -> str:
    """One readable line per invalid field: its name, what was given and what is allowed."""
    lines = []
    for problem in err.errors():
        field = ".".join(str(p) for p in problem["loc"])
        message = problem["msg"].removeprefix("Value error, ")
        if not field:  # a check of several settings together: its message names them
            lines.append(f"invalid settings: {message}")
            continue
        if problem["type"] == "extra_forbidden":
            message = f"unknown setting; known settings are: {', '.join(Settings.model_fields)}"
        elif problem["type"] == "literal_error" or problem["type"] in _NUMBER_ERRORS:
            message = f"{message} (got {problem['input']!r})"
        elif problem["type"] in ("bool_parsing", "bool_type"):
            message = f"give true or false (or on/off, yes/no, 1/0), got {problem['input']!r}"
        lines.append(f"invalid setting {field}: {message}")
    return "\n".join(lines)
