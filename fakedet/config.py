"""TrainingConfig: the one validated description of a training run (its files: `config_files`)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from fakedet.defaults import fill_dependent_defaults

DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


# The everyday-processing kinds a config may name (fakedet/data/processing.py says what each does).
PROCESSING_KINDS = (
    "jpeg95", "jpeg75", "jpeg60", "downscale0.75", "downscale0.5", "webp80", "webp70", "unsharp",
    "screenshot", "crop50",
)  # fmt: skip


# Settings that must be whole numbers: YAML's `true` is refused rather than read as 1.
WHOLE_NUMBER_FIELDS = (
    "epochs", "img_size", "gradient_accumulation_steps", "num_workers", "prefetch_factor",
    "early_stopping_patience", "validate_interval", "save_every", "max_nonfinite_steps", "seed",
)  # fmt: skip


def threshold_rule_parts(rule: str) -> tuple[str, float | None] | None:
    """`fixed:0.5` -> ("fixed", 0.5), `eer` -> ("eer", None), `fpr:0.01` -> ("fpr", 0.01),
    `fnr:0.05` -> ("fnr", 0.05); None for any other spelling or a value out of [0, 1]."""
    kind, _, value = rule.strip().lower().partition(":")
    if kind == "eer" and not value:
        return "eer", None
    if kind in ("fixed", "fpr", "fnr") and value:
        try:
            number = float(value)
        except ValueError:
            return None
        if 0.0 <= number <= 1.0:
            return kind, number
    return None


class TrainingConfig(BaseModel):
    """Every setting of a training run; validated once, then passed around as plain values."""

    # No inf or nan: an infinite LR or loss weight only fails epochs later, in the metrics.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    data_root: Path = Field(description="Dataset folder (folder layout, or CSV with --use-csv).")
    epochs: int = Field(50, ge=1, description="Number of epochs to train.")
    batch_size: int | Literal["auto"] = Field(
        16, description="Images per optimizer micro-step, or 'auto' to let the advisor pick."
    )
    lr: float = Field(
        1.25e-5, gt=0, description="Peak learning rate (AdamW), reached after warmup."
    )
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay.")
    output_dir: Path = Field(Path("checkpoints"), description="Where checkpoints and logs go.")
    mode: str = Field(
        "fast", description="Registered model name: fast, full, or any model registered later."
    )
    img_size: int = Field(256, ge=64, description="Training crop size in pixels (multiple of 32).")
    use_amp: bool = Field(False, description="Mixed precision (fp16/bf16 on CUDA, bf16 on CPU).")
    amp_dtype: Literal["auto", "fp16", "bf16"] = Field(
        "auto", description="AMP dtype on CUDA: auto picks bf16 on compute capability >= 8.0."
    )
    use_csv: bool = Field(False, description="Read labels from CSV files in data_root.")
    skip_missing: bool = Field(False, description="CSV: skip rows whose file is missing.")
    val_split: float = Field(
        0.1, gt=0, lt=1, description="Fraction of train held out when there is no val folder."
    )
    regression_weight: float = Field(1.0, ge=0, description="Weight of the MSE realness loss.")
    classification_weight: float = Field(0.3, ge=0, description="Weight of the real/fake CE.")
    ranking_weight: float = Field(0.2, ge=0, description="Weight of the real>fake ranking loss.")
    ranking_margin: float = Field(
        0.3, ge=0, le=1, description="Margin by which a real score should beat a fake one."
    )
    scheduler_type: Literal["cosine", "constant"] = Field(
        "cosine", description="LR shape after warmup."
    )
    warmup_epochs: float = Field(5, ge=0, description="Linear warmup length in epochs.")
    min_lr: float = Field(1e-6, ge=0, description="LR at the end of the cosine.")
    gradient_accumulation_steps: int = Field(1, ge=1, description="Micro-batches per step.")
    grad_clip: float = Field(1.0, ge=0, description="Max gradient norm (0 turns clipping off).")
    num_workers: int | None = Field(
        None,
        ge=0,
        description="DataLoader worker processes; unset: by device at start (min(4, cores), "
        "min(12, cores) on CUDA, 0 on Windows).",
    )
    pin_memory: bool = Field(True, description="Pin host memory (CUDA only).")
    persistent_workers: bool = Field(True, description="Keep workers between epochs.")
    prefetch_factor: int = Field(2, ge=1, description="Batches prefetched per worker.")
    drop_last: bool = Field(True, description="Drop the last partial train batch.")
    hflip: bool = Field(True, description="Random horizontal flip in training.")
    blur_prob: float = Field(0.1, ge=0, le=1, description="Probability of Gaussian blur (train).")
    jpeg_prob: float = Field(0.1, ge=0, le=1, description="Probability of JPEG re-encoding.")
    blur_sigma_max: float = Field(
        3.0, gt=0, le=10, description="Largest Gaussian blur sigma (drawn from 0 to this)."
    )
    resize_prob: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Probability of an anti-aliased down-scale before the crop (train; only "
        "images larger than the crop can shrink).",
    )
    resize_min_scale: float = Field(
        0.5, gt=0, le=1, description="Smallest down-scale factor (drawn from this to 1)."
    )
    early_stopping_patience: int = Field(
        15, ge=0, description="Validations without val_loss improvement before stopping (0: off)."
    )
    validate_interval: int = Field(1, ge=1, description="Validate every N epochs.")
    save_every: int = Field(
        10, ge=0, description="Write checkpoint_epoch_N.pt every N epochs (0: never)."
    )
    max_nonfinite_steps: int = Field(
        20, ge=1, description="Stop after this many non-finite losses in a row."
    )
    use_tensorboard: bool = Field(True, description="Write TensorBoard logs to output_dir/logs.")
    plots: bool = Field(
        True, description="Draw curves, ROC/PR, confusion and score plots at the end."
    )
    calibration_method: Literal["auto", "identity", "temperature", "platt", "isotonic"] = Field(
        "auto",
        description="How the end of training calibrates realness on val (auto: the map that "
        "beats raw scores out of fold, if any).",
    )
    threshold_rule: str = Field(
        "fixed:0.5",
        description="Operating threshold on calibrated realness: fixed:X, eer, fpr:R or fnr:R "
        "(R guaranteed on new images with 95% confidence).",
    )
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N or mps.")
    seed: int = Field(42, ge=0, description="Seed of every random choice in the run.")
    image_column: str = Field(
        "image", min_length=1, description="Parquet shards: the column of image bytes."
    )
    label_column: str = Field(
        "label", min_length=1, description="Parquet shards: the label column (0/1 or real/fake)."
    )
    generator_column: str = Field(
        "generator", min_length=1, description="Parquet shards: the optional generator column."
    )
    backbone: str | None = Field(
        None,
        description="Pretrained backbone SOURCE:NAME (timm, open_clip, torchvision), e.g. "
        "timm:convnext_tiny.fb_in22k; unset: the from-scratch model of --mode.",
    )
    weights: Path | None = Field(
        None,
        description="The backbone's weights file, loaded through its library (nothing is "
        "downloaded); unset: the library's own download.",
    )
    weights_sha256: str | None = Field(
        None,
        description="sha256 of --weights, recorded when training starts; given, the file must "
        "match it.",
    )
    finetune: bool = Field(
        False,
        description="With --backbone: train it too (fully, or LoRA with --lora-rank), or "
        "(--probe) a linear probe on its frozen, cached features.",
    )
    lora_rank: int = Field(
        0, ge=0, description="With --finetune: LoRA adapters of this rank (0: every weight)."
    )
    backbone_lr_scale: float = Field(
        0.1, gt=0, le=1, description="With --finetune: the backbone's LR as a fraction of --lr."
    )
    probe_augment: int = Field(
        0,
        ge=0,
        le=64,
        description="Probe: cache this many seeded augmented views of each train image "
        "(0: the centre crop alone).",
    )
    with_spectral: bool = Field(
        False, description="Add the spectral-coherence branch beside the backbone's probe."
    )
    init_from: Path | None = Field(
        None,
        description="Start a new run from this checkpoint's weights (fresh optimizer, schedule "
        "and history; LR default 2e-5).",
    )
    processing_probs: dict[str, float] = Field(
        default_factory=dict,
        description="Everyday-processing augmentation (train): kind -> probability, kinds "
        "jpeg95, jpeg75, jpeg60, downscale0.75, downscale0.5, webp80, webp70, unsharp, "
        "screenshot, crop50; a mapping in a config file, or jpeg60:0.1,crop50:0.2 as a flag.",
    )
    processing_on: Literal["both", "real"] = Field(
        "both",
        description="Which images the everyday processing touches: both classes, or real only "
        "(processed reals stay real while fakes keep their traces).",
    )
    compile: bool = Field(
        False,
        description="torch.compile the model and the loss: the first steps compile (minutes); "
        "pays on a GPU over long runs.",
    )
    gpu_augment: bool = Field(
        False,
        description="On CUDA: flip, blur and JPEG augmentation of whole batches on the GPU "
        "instead of in the loader workers (crops stay there).",
    )
    gpu_decode: bool = Field(
        False,
        description="With gpu_augment on CUDA: the workers read JPEG bytes and draw crops, and "
        "each batch's JPEGs decode on the GPU (nvJPEG); other files as before.",
    )
    channels_last: bool = Field(
        False,
        description="Keep the weights and batches channels-last (NHWC) while training: "
        "faster convolutions on a GPU (benchmarks/precision.py measures it).",
    )
    patch_topk: float = Field(
        0.2,
        ge=0.0,
        le=1.0,
        description="Share of the most suspicious patches whose mean logit joins the image's "
        "score (top-k pooling; 0: no patch read).",
    )
    spectrum_read: bool = Field(
        True,
        description="Fit the spectral-coherence branch's radial-spectrum read before training "
        "(frozen; off: that logit stays 0 and the other branches decide; off by default for "
        "the full model).",
    )

    @field_validator(*WHOLE_NUMBER_FIELDS, mode="before")
    @classmethod
    def _not_a_boolean(cls, value: object) -> object:
        # YAML's `epochs: true` would otherwise quietly read as 1.
        if isinstance(value, bool):
            raise ValueError("must be a whole number, not true/false")
        return value

    @field_validator("img_size")
    @classmethod
    def _img_size_fits_the_models(cls, value: int) -> int:
        from fakedet.models.registry import check_img_size  # deferred: the models import torch

        check_img_size(value)
        return value

    @field_validator("mode")
    @classmethod
    def _registered_model(cls, value: str) -> str:
        from fakedet.models import list_models  # deferred: the models import torch

        if value not in list_models():
            raise ValueError(f"is not a registered model (known: {', '.join(list_models())})")
        return value

    @field_validator("batch_size", mode="before")
    @classmethod
    def _positive_batch_or_auto(cls, value: object) -> object:
        if value == "auto":
            return value
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise ValueError("must be a positive integer or 'auto'")
        try:
            number = int(value)
        except ValueError:
            raise ValueError("must be a positive integer or 'auto'") from None
        if number < 1:
            raise ValueError("must be a positive integer or 'auto'")
        return number

    @field_validator("threshold_rule")
    @classmethod
    def _known_threshold_rule(cls, value: str) -> str:
        if threshold_rule_parts(value) is None:
            raise ValueError("must be fixed:X, eer, fpr:R or fnr:R with X and R in [0, 1]")
        return value.strip().lower()

    @field_validator("processing_probs", mode="before")
    @classmethod
    def _processing_from_text(cls, value: object) -> object:
        # The flag's spelling: "jpeg60:0.1,crop50:0.2".
        if not isinstance(value, str):
            return value
        pairs = [item.partition(":") for item in value.split(",") if item.strip()]
        if any(not sep for _, sep, _ in pairs):
            raise ValueError("must be KIND:PROBABILITY[,KIND:PROBABILITY...], e.g. jpeg60:0.1")
        return {kind.strip(): probability.strip() for kind, _, probability in pairs}

    @field_validator("processing_probs")
    @classmethod
    def _known_processing(cls, value: dict[str, float]) -> dict[str, float]:
        for kind, probability in value.items():
            if kind not in PROCESSING_KINDS:
                raise ValueError(f"names {kind!r}; known kinds: {', '.join(PROCESSING_KINDS)}")
            if not 0.0 <= probability <= 1.0:
                raise ValueError(f"gives {kind} {probability:g}, outside [0, 1]")
        return value

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if not DEVICE_PATTERN.match(value):
            raise ValueError("must be auto, cpu, cuda, cuda:N or mps")
        return value

    @field_validator("backbone")
    @classmethod
    def _known_backbone(cls, value: str | None) -> str | None:
        if value is None:
            return value
        from fakedet.models.backbones import check_backbone  # deferred: imports its library

        source, name = check_backbone(value)
        return f"{source}:{name}"

    @field_validator("weights_sha256")
    @classmethod
    def _sha256_hex(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[0-9a-f]{64}", value.lower()):
            raise ValueError("must be 64 hex digits")
        return value.lower() if value is not None else None

    @model_validator(mode="before")
    @classmethod
    def _dependent_defaults(cls, values: Any) -> Any:
        """Defaults that depend on other settings (fakedet/defaults.py)."""
        return fill_dependent_defaults(values) if isinstance(values, dict) else values

    @model_validator(mode="after")
    def _backbone_settings_need_a_backbone(self) -> TrainingConfig:
        if self.backbone is None:
            given = [
                name
                for name in ("weights", "weights_sha256", "finetune", "with_spectral")
                if getattr(self, name)
            ]
            if given:
                raise ValueError(
                    f"{', '.join(given)} given without --backbone SOURCE:NAME; add a backbone "
                    "or drop them"
                )
        if self.lora_rank and not self.finetune:
            raise ValueError(f"lora_rank {self.lora_rank} applies only with --finetune")
        if self.probe_augment and self.finetune:
            raise ValueError(
                f"probe_augment {self.probe_augment} applies only to a probe; drop --finetune"
            )
        return self

    @model_validator(mode="after")
    def _min_lr_below_lr(self) -> TrainingConfig:
        if self.min_lr > self.lr:
            raise ValueError(
                f"min_lr ({self.min_lr:g}) must not exceed lr ({self.lr:g}); lower --min-lr too"
            )
        return self

    @model_validator(mode="after")
    def _some_loss_weight(self) -> TrainingConfig:
        weights = (self.regression_weight, self.classification_weight, self.ranking_weight)
        if not any(weights):
            raise ValueError("regression, classification and ranking weights are all 0")
        return self

    @model_validator(mode="after")
    def _gpu_decode_needs_gpu_augment(self) -> TrainingConfig:
        if self.gpu_decode and not self.gpu_augment:  # the workers would hold no pixels
            raise ValueError("gpu_decode needs gpu_augment; add --gpu-augment")
        return self
