"""Typed configuration: one dataclass per concern, loaded from YAML/TOML, overridable.

This module is the schema (the dataclasses and their validation) and :func:`load_config`;
the generic typed loader (files, overrides, conversion) is :mod:`astropt.config_io`, whose
functions are re-exported here. A config file is a mapping with the sections ``model``,
``data`` and ``train`` (each optional). Values are validated once here, at the edge, and
trusted afterwards. Unknown keys are an error that names the key, so a typo never silently
becomes a default.

Overrides use dotted paths, ``model.n_layer=6`` or ``train.lr=3e-4``; list items are
addressed by index (``model.modalities.0.patch_size=8``). Values are parsed as YAML
scalars, so ``true``, ``1e-3`` and ``[1, 2]`` have their natural types.
"""

from __future__ import annotations

import dataclasses
import math
import os
import string
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, get_args

from astropt.config_io import (  # noqa: F401  (the generic loader; re-exported here)
    apply_overrides,
    config_hash,
    from_dict,
    read_file,
    save_config,
    to_dict,
)
from astropt.errors import ConfigError  # noqa: F401  (re-exported)

T = TypeVar("T")

TEXT = "text"
"""Batch key of a record's text (a caption, a catalogue line): a list of strings from the
loader, token ids ``(B, L)`` (with ``text_mask``) once the LLM backbone has tokenised them."""


# ----------------------------------------------------------------------------- modalities

ModalityKind = Literal["image", "spectrum", "timeseries", "scalars", "tokens", "discrete"]
"""``tokens``: token vectors given as they are (no tokeniser in this package), e.g. a
non-image modality imported from a reference checkpoint; ``max_tokens`` bounds its length.
``discrete``: integer codes (a codebook index per position, e.g. a codec's output): an
embedding table in, logits out, a cross-entropy loss; ``vocab_size`` codes, ``max_tokens``
positions."""

TOKEN_SIZES: dict[str, Callable[[ModalityConfig], tuple[int, int]]] = {}
"""Per modality kind: ``(input_size, pos_input_size)`` of its tokens. Filled by the
tokeniser classes of :mod:`astropt.modalities` (``register``), which own those sizes; the
config derives its sizes from them and checks the sizes a file gives."""


def token_sizes(config: ModalityConfig) -> tuple[int, int]:
    """``(input_size, pos_input_size)`` that the tokeniser of ``config.kind`` produces."""
    if config.kind not in TOKEN_SIZES:  # importing the package `astropt` registers them all
        raise ConfigError(f"modality {config.name!r}: no tokeniser of kind {config.kind!r} is registered")
    return TOKEN_SIZES[config.kind](config)


@dataclass
class ModalityConfig:
    """How one modality is tokenised and embedded. Travels with the weights."""

    name: str = "images"
    """Name of the modality; also the key of its arrays in a batch."""
    kind: ModalityKind = "image"
    """Which tokeniser turns observations of this modality into tokens."""
    field: str = ""
    """Key of this modality's array in an observation record (default: the kind's name,
    e.g. ``image``, ``spectrum``)."""
    # --- image
    image_size: int = 64
    """Height and width (pixels) images are cropped/padded to before patching."""
    n_channels: int = 3
    """Number of bands (channels) of an image, in ``bands`` order."""
    bands: list[str] = dataclasses.field(default_factory=list)
    """Band names in channel order (e.g. ``[g, r, i, z]``); informative, checked on load."""
    patch_size: int = 16
    """Side of a square image patch (pixels); windows of ``patch_size`` samples for spectra."""
    patch_order: Literal["spiral", "raster"] = "spiral"
    """Order of patches in the sequence: spiral from the centre outwards, or row by row."""
    normalize: Literal["patch", "none"] = "patch"
    """Per-token standardisation (mean/std of each patch vector) or none."""
    stretch: Literal["none", "asinh", "log"] = "none"
    """Optional intensity stretch applied to the whole image before patching."""
    stretch_scale: float = 1.0
    """Softening scale of the asinh/log stretch: ``asinh(x / scale)``."""
    flux_features: bool = False
    """Append each patch's (asinh) mean and log std to its token so absolute flux survives."""
    flux_scale: float | list[float] | str = 0.0
    """Survey-level flux unit of the flux features (the sky noise per pixel): when > 0 they
    are ``asinh(mean / flux_scale)`` and ``log1p(std / flux_scale)`` per band, numbers of
    order 1 like the standardised pixels; 0 keeps raw ``asinh(mean)``, ``log(std)``. One
    number for every band, a list of one per band, or ``auto``: the per-band sky noise that
    ``prepare`` measured (``manifest.json``), resolved when training starts and saved as
    numbers in the model's config, so a trained model keeps its units."""
    transpose_hw: bool = False
    """Swap H and W before patching (reproduces the reference's HF-dataset convention)."""
    # --- sequences (spectrum / timeseries / scalars)
    max_tokens: int = 0
    """Maximum tokens of a variable-length modality (0: derived from the image grid)."""
    scalar_names: list[str] = dataclasses.field(default_factory=list)
    """For ``scalars``: the catalogue quantities, one token each, in this order. A name is
    read from ``record["labels"][name]`` or ``record[name]``; ``field[i]`` picks element
    ``i`` of an array field (e.g. ``photometry[1]``)."""
    scalar_mean: list[float] = dataclasses.field(default_factory=list)
    """For ``scalars``: per-name means subtracted before tokenising (empty: none)."""
    scalar_std: list[float] = dataclasses.field(default_factory=list)
    """For ``scalars``: per-name scales divided out before tokenising (empty: none)."""
    wavelength_range: list[float] = dataclasses.field(default_factory=lambda: [3000.0, 11000.0])
    """For ``spectrum``: wavelengths (Angstrom) mapped to -1 and 1 (in log wavelength) to
    make the continuous position of a window, so spectra on different grids share one model."""
    ivar_weights: bool = False
    """For ``spectrum``: weight the loss of each flux sample by its (normalised) inverse
    variance, when the records carry ``<field>_ivar``."""
    # --- embedding
    input_size: int = 0
    """Token vector size; 0 means derived (``patch_size**2 * n_channels`` for images)."""
    position: Literal["learned", "continuous"] = "learned"
    """Position embedding: a learned table by token index, or a projection of a coordinate."""
    pos_input_size: int = 1
    """Size of the continuous coordinate vector when ``position == 'continuous'``."""
    loss_weight: float = 1.0
    """Weight of this modality in the training loss."""
    # --- discrete
    vocab_size: int = 0
    """For ``discrete``: number of codes (the embedding table's rows and the logits' width)."""
    codec: Literal["none", "aion"] = "none"
    """For ``discrete``: ``none`` (records carry the integer codes) or ``aion``: the
    ``polymathic-aion`` codec of ``codec_name`` tokenises the raw array (the ``aion`` extra)."""
    codec_name: str = ""
    """For ``codec: aion``: the AION modality whose codec tokenises ``field``:
    ``LegacySurveyImage`` (alias ``image``; AION band names in ``bands``, e.g. ``DES-G``),
    ``HSCImage``, ``DESISpectrum`` (alias ``spectrum``) or ``SDSSSpectrum``."""

    def __post_init__(self) -> None:
        if not self.field:
            self.field = self.kind
        if self.kind == "discrete":
            self._check_discrete()
        if self.kind == "image":
            if self.patch_size <= 0 or self.image_size % self.patch_size != 0:
                raise ConfigError(
                    f"modality {self.name!r}: image_size {self.image_size} is not a multiple "
                    f"of patch_size {self.patch_size}"
                )
            if self.n_channels <= 0:
                raise ConfigError(f"modality {self.name!r}: n_channels must be positive")
            if self.bands and len(self.bands) != self.n_channels:
                raise ConfigError(
                    f"modality {self.name!r}: {len(self.bands)} bands {self.bands} but "
                    f"n_channels={self.n_channels}"
                )
            self._check_flux_scale()
            expected, _ = token_sizes(self)
            if self.input_size == 0:
                self.input_size = expected
            elif self.input_size != expected:
                raise ConfigError(
                    f"modality {self.name!r}: input_size {self.input_size} does not match "
                    f"patch_size**2 * n_channels = {expected}"
                )
        if self.kind == "scalars":
            self._check_scalars()
        if self.kind == "tokens" and self.max_tokens <= 0:
            raise ConfigError(f"modality {self.name!r}: tokens need max_tokens > 0")
        if self.kind in ("spectrum", "timeseries"):
            self._check_sequence()
        if self.input_size <= 0 and self.kind != "image":
            raise ConfigError(f"modality {self.name!r}: input_size must be set for {self.kind}")
        if self.loss_weight < 0:
            raise ConfigError(f"modality {self.name!r}: loss_weight must be >= 0")

    def _check_flux_scale(self) -> None:
        scale = self.flux_scale
        if scale == "auto":
            return
        values = scale if isinstance(scale, list) else [scale]
        if isinstance(scale, str) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 for v in values
        ):
            raise ConfigError(
                f"modality {self.name!r}: flux_scale must be 'auto', a number >= 0 or a list of one number "
                f">= 0 per band, got {scale!r}"
            )
        if isinstance(scale, list) and (len(scale) != self.n_channels or not all(v > 0 for v in scale)):
            raise ConfigError(
                f"modality {self.name!r}: flux_scale lists {scale} but needs one positive number for each of "
                f"the {self.n_channels} bands"
            )

    def _check_scalars(self) -> None:
        n = len(self.scalar_names)
        if n == 0:
            raise ConfigError(f"modality {self.name!r}: scalars need scalar_names")
        for what, stats in (("scalar_mean", self.scalar_mean), ("scalar_std", self.scalar_std)):
            if stats and len(stats) != n:
                raise ConfigError(
                    f"modality {self.name!r}: {what} has {len(stats)} values for {n} scalar_names"
                )
        if any(s <= 0 for s in self.scalar_std):
            raise ConfigError(f"modality {self.name!r}: scalar_std must be positive")
        self.max_tokens = self.max_tokens or n
        if self.max_tokens != n:
            raise ConfigError(f"modality {self.name!r}: max_tokens must equal the {n} scalar_names")
        expected, _ = token_sizes(self)
        self.input_size = self.input_size or expected
        if self.input_size != expected:
            raise ConfigError(f"modality {self.name!r}: scalar tokens have input_size {expected}")

    def _check_discrete(self) -> None:
        if self.vocab_size <= 1:
            raise ConfigError(f"modality {self.name!r}: discrete needs vocab_size > 1, got {self.vocab_size}")
        if self.max_tokens <= 0:
            raise ConfigError(f"modality {self.name!r}: discrete needs max_tokens > 0")
        if self.codec == "aion" and not self.codec_name:
            raise ConfigError(f"modality {self.name!r}: codec 'aion' needs codec_name (e.g. image)")
        expected, _ = token_sizes(self)
        self.input_size = self.input_size or expected
        if self.input_size != expected or self.position != "learned":
            raise ConfigError(
                f"modality {self.name!r}: discrete tokens are one code each (input_size 1) "
                "with learned positions"
            )

    def _check_sequence(self) -> None:
        """Spectra and light curves: derived token and coordinate sizes, continuous positions."""
        if self.max_tokens <= 0:
            raise ConfigError(f"modality {self.name!r}: {self.kind} needs max_tokens > 0")
        if self.kind == "spectrum":
            if self.patch_size <= 0:
                raise ConfigError(f"modality {self.name!r}: patch_size (window) must be positive")
            lo, hi = (self.wavelength_range + [0.0, 0.0])[:2]
            if len(self.wavelength_range) != 2 or not 0 < lo < hi:
                raise ConfigError(
                    f"modality {self.name!r}: wavelength_range must be [min, max] with "
                    f"0 < min < max, got {self.wavelength_range}"
                )
        elif not self.bands:
            raise ConfigError(f"modality {self.name!r}: timeseries needs the band names in bands")
        sizes = dict(zip(("input_size", "pos_input_size"), token_sizes(self), strict=True))
        self.position = "continuous"
        for key, expected in sizes.items():
            value = getattr(self, key)
            # pos_input_size defaults to 1, which is never valid here: derive it.
            if value in (0, 1) and expected != value:
                setattr(self, key, expected)
            elif value != expected:
                raise ConfigError(
                    f"modality {self.name!r}: {key} {value} does not match {expected} for {self.kind}"
                )

    @property
    def n_tokens(self) -> int:
        """Number of tokens one observation of this modality becomes (maximum, if variable)."""
        if self.kind == "image":
            return (self.image_size // self.patch_size) ** 2
        return self.max_tokens


# ----------------------------------------------------------------------------- model

DtypeName = Literal["auto", "float32", "bfloat16", "float16"]
"""Compute dtypes by name; ``auto`` is resolved by :func:`astropt.runtime.resolve_dtype`."""
DTYPE_NAMES: tuple[str, ...] = get_args(DtypeName)
PRECISIONS: tuple[str, ...] = ("float32", "float16")
"""How embedding vectors are stored (``astropt embed --precision``)."""
MixedPrecisionName = Literal["auto", "autocast", "cast_once"]
"""How low-precision training computes: per-op ``autocast``, or a compute copy of the weights
cast ``cast_once`` per step (fp32 master weights); ``auto`` picks by device
(:func:`astropt.train.precision.resolve_mixed_precision`)."""
AttentionKernelName = Literal["auto", "sdpa", "recompute"]
"""Attention kernel of training: torch's fused SDPA forward and backward, or ``recompute``
(SDPA's flash forward, a bf16 backward of our own for CPUs: :mod:`astropt.model.attention`);
``auto`` picks by device and dtype."""
ATTENTION_KERNELS: tuple[str, ...] = get_args(AttentionKernelName)
MallocName = Literal["auto", "system"]
"""The CPU allocator setting of a training run (``train.malloc``)."""
COMPILE_MIN_OBJECTS = 20_000
"""``astropt embed`` on a GPU compiles bf16 jobs of at least this many objects by default
(:func:`astropt.tasks.embed.resolve_compile`); on a CPU it compiles only when asked."""

PoolName = Literal["mean", "mean_max", "mean_max_std", "last", "exp_decay", "none"]
"""How token embeddings are pooled into one vector per object (``none``: no pooling)."""
POOLS: tuple[str, ...] = get_args(PoolName)
"""The pool registry: every name the model, the tasks and the CLI accept."""

ProbeName = Literal["linear", "ridge", "mlp", "attention"]
"""Probe models of ``astropt probe``: ``attention`` reads token embeddings (``pool none``),
the others pooled vectors."""
PROBES: tuple[str, ...] = get_args(ProbeName)


@dataclass
class LLMConfig:
    """A Hugging Face causal language model as the backbone (``model.backbone: llm``).

    With ``model_name`` the named model (hub id or local folder) and its tokenizer are
    loaded; without, a small Llama-architecture model of the ``model`` section's
    ``n_layer``/``n_head``/``n_embd`` is built with random weights and a word-level
    tokenizer over ``vocab`` (offline). Either way the model's ``n_layer``/``n_head``/
    ``n_embd`` must describe the LLM (checked when it is built).
    """

    model_name: str = ""
    """Hub id (e.g. ``HuggingFaceTB/SmolLM2-135M``) or folder of a pretrained causal LM;
    empty: build the small random model described above."""
    revision: str = ""
    """Hub revision (branch, tag, commit) of ``model_name``; empty: the default branch."""
    intermediate_size: int = 0
    """Built model only: MLP width (0: ``4 * n_embd``)."""
    n_kv_head: int = 0
    """Built model only: key/value heads (grouped-query attention; 0: ``n_head``)."""
    vocab: list[str] = field(default_factory=list)
    """Built model only: the words of its tokenizer (empty: a small built-in list)."""
    lora_r: int = 0
    """Rank of rank-stabilised LoRA adapters on all linear layers of the LLM; 0 freezes the
    LLM (only the observation encoders/decoders and positions train)."""
    lora_alpha: float = 32.0
    """LoRA scaling numerator (rank-stabilised: ``alpha / sqrt(r)``)."""
    qlora: bool = False
    """Load the LLM in 4 bits (NF4) for QLoRA; needs a CUDA GPU and ``bitsandbytes``."""
    text_loss_weight: float = 1.0
    """Weight of the text (next word) cross-entropy when a batch carries ``text`` ids."""

    def __post_init__(self) -> None:
        if self.lora_r < 0 or self.lora_alpha <= 0:
            raise ConfigError("model.llm: lora_r must be >= 0 and lora_alpha > 0")
        if self.qlora and not self.model_name:
            raise ConfigError("model.llm.qlora needs a pretrained model_name to quantise")
        if self.text_loss_weight < 0:
            raise ConfigError("model.llm.text_loss_weight must be >= 0")


@dataclass
class TextConfig:
    """Text interleaved after the observations (``model.text``; LLM backbone only).

    Each record's text is its ``column`` (a caption), or ``template`` rendered with the
    record's labels and fields (a catalogue line, e.g. ``"redshift {redshift:.2f}"``). The
    LLM's own tokenizer turns it into ids between ``<|begin_text|>`` and ``<|end_text|>``.
    Travels with the weights, like the modalities.
    """

    column: str = ""
    """Label (or record field) holding the text, e.g. ``caption``."""
    template: str = ""
    """A ``str.format`` template over the record's labels, e.g. ``"z {redshift:.1f}"``."""
    max_tokens: int = 32
    """Text tokens kept per object (longer texts are cut), not counting begin/end."""

    @property
    def enabled(self) -> bool:
        return bool(self.column or self.template)

    def __post_init__(self) -> None:
        if self.column and self.template:
            raise ConfigError("model.text: give either column or template, not both")
        if self.max_tokens <= 0:
            raise ConfigError(f"model.text.max_tokens must be positive, got {self.max_tokens}")
        if self.template:
            try:
                names = [f for _, f, _, _ in string.Formatter().parse(self.template) if f is not None]
            except ValueError as exc:
                raise ConfigError(f"model.text.template {self.template!r} is not a format string ({exc})") from None
            if not names or any(not n or not n.isidentifier() for n in names):
                raise ConfigError(
                    f"model.text.template {self.template!r}: every field must name a label, "
                    "e.g. \"redshift {redshift:.2f}\""
                )


@dataclass
class ModelConfig:
    """Shape of an AstroPT model. Together with its modalities, it fully determines it."""

    n_layer: int = 4
    """Number of transformer blocks."""
    n_head: int = 4
    """Attention heads per block."""
    n_embd: int = 128
    """Width of the residual stream."""
    block_size: int = 1024
    """Longest sequence (all modalities together); also the size of learned position tables."""
    dropout: float = 0.0
    """Dropout on embeddings, attention and residual branches."""
    bias: bool = False
    """Biases in Linear and LayerNorm layers (False: the reference's default)."""
    tokeniser: Literal["aim", "affine", "relu"] = "aim"
    """Token encoder/decoder: AIM MLP (Linear-GELU-Linear, 4x hidden), one Linear, or
    ``relu``: the v1 reference's ReLU MLPs (encoder in-C-C, decoder C-2C-C-out, with biases),
    which the original DESI and the Euclid models were trained with."""
    attn: Literal["causal", "full"] = "causal"
    """Attention mask of the transformer: causal (AR) or full (masked objective)."""
    mask_token: bool = False
    """A learned token that stands in for hidden tokens: always there with ``attn: full``;
    ``train.objective: ar_mae`` sets it for its causal model."""
    modalities: list[ModalityConfig] = field(default_factory=lambda: [ModalityConfig()])
    """The modalities, in sequence order (see ``modality_order``)."""
    modality_order: Literal["sorted", "config", "shuffle"] = "sorted"
    """Sequence order of modalities: sorted by name (reference), as listed, or (``shuffle``)
    drawn at random per training batch (evaluation and generation use the listed order)."""
    modality_tokens: bool = False
    """Prepend a learned begin token to each modality's segment (multimodal models)."""
    embed_layer: int = -1
    """Block index (0-based) whose output is the default embedding; -1 = n_layer // 2."""
    embed_layers: list[int] = field(default_factory=list)
    """Blocks (0-based, in this order) whose pooled outputs, concatenated, are the default
    embedding (``len(embed_layers)`` x the pooled width); empty: the one block ``embed_layer``."""
    embed_pool: PoolName = "mean"
    """Default pooling of token embeddings (``mean_max``: mean and max concatenated, 2x wide;
    ``mean_max_std``: also the standard deviation over tokens, 3x wide)."""
    lora_r: int = 0
    """LoRA rank carried over from a reference checkpoint (merged at load); 0: none."""
    backbone: Literal["native", "llm"] = "native"
    """``native``: our GPT blocks; ``llm``: a Hugging Face causal LM (see ``llm``), with
    observation tokens projected into its width and ``<|begin_{modality}|>`` special tokens."""
    llm: LLMConfig = field(default_factory=LLMConfig)
    """The LLM of ``backbone: llm`` (ignored by the native backbone)."""
    text: TextConfig = field(default_factory=TextConfig)
    """Text (caption / catalogue line) after the observations; needs ``backbone: llm``."""

    def __post_init__(self) -> None:
        if self.n_layer <= 0 or self.n_head <= 0 or self.n_embd <= 0:
            raise ConfigError("model: n_layer, n_head and n_embd must be positive")
        if self.n_embd % self.n_head != 0:
            raise ConfigError(
                f"model: n_embd {self.n_embd} is not divisible by n_head {self.n_head}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.dropout must be in [0, 1), got {self.dropout}")
        if not self.modalities:
            raise ConfigError("model.modalities: at least one modality is required")
        names = [m.name for m in self.modalities]
        if len(set(names)) != len(names):
            raise ConfigError(f"model.modalities: duplicate names {names}")
        if self.embed_layer >= self.n_layer or self.embed_layer < -1:
            raise ConfigError(
                f"model.embed_layer {self.embed_layer} out of range for n_layer {self.n_layer}"
            )
        self._check_embed_layers()
        if self.backbone == "llm" and (self.attn != "causal" or not self.modality_tokens):
            raise ConfigError(
                "model.backbone 'llm' needs attn: causal and modality_tokens: true (each modality "
                "starts with its <|begin_{modality}|> token)"
            )
        self._check_text(names)
        n_tokens = self.sequence_length
        if n_tokens > self.block_size:
            raise ConfigError(
                f"model.block_size {self.block_size} is smaller than the sequence "
                f"({n_tokens} tokens from {names})"
            )

    def _check_embed_layers(self) -> None:
        bad = [k for k in self.embed_layers if not 0 <= k < self.n_layer]
        if bad:
            raise ConfigError(
                f"model.embed_layers {self.embed_layers}: blocks {bad} out of range 0..{self.n_layer - 1} "
                f"(n_layer {self.n_layer}); list block indices, e.g. [1, 2, 3]"
            )
        if len(set(self.embed_layers)) != len(self.embed_layers):
            raise ConfigError(f"model.embed_layers {self.embed_layers} repeats a block; list each block once")

    def _check_text(self, names: list[str]) -> None:
        if not self.text.enabled:
            return
        if self.backbone != "llm":
            raise ConfigError(
                "model.text interleaves text with the observations, which needs a language model "
                "and its tokenizer: set model.backbone: llm (see configs/llm-tiny-text.yaml), or "
                f"remove model.text for the {self.backbone} backbone"
            )
        if TEXT in names:
            raise ConfigError(f"model.modalities: the name {TEXT!r} is the text's; rename that modality")

    @property
    def default_embed_layer(self) -> int:
        """The block whose output is the embedding: ``embed_layer``, or ``n_layer // 2`` when
        it is negative (the reference's v2 convention)."""
        return self.n_layer // 2 if self.embed_layer < 0 else self.embed_layer

    @property
    def ordered_modalities(self) -> list[ModalityConfig]:
        """The modalities in sequence order (as listed, or by name for ``sorted``)."""
        if self.modality_order == "sorted":
            return sorted(self.modalities, key=lambda m: m.name)
        return list(self.modalities)

    @property
    def sequence_length(self) -> int:
        """Tokens in the longest sequence: every modality's tokens (plus a begin token each with
        ``modality_tokens``) and the text's, when there is text."""
        extra = 1 if self.modality_tokens else 0
        text = self.text.max_tokens + 2 if self.text.enabled else 0  # with <|begin_text|>, <|end_text|>
        return sum(m.n_tokens + extra for m in self.modalities) + text

    def modality(self, name: str) -> ModalityConfig:
        """The modality config called ``name`` (a ``KeyError`` naming the others if absent)."""
        for m in self.modalities:
            if m.name == name:
                return m
        raise KeyError(f"model has no modality {name!r}; it has {[m.name for m in self.modalities]}")


# ----------------------------------------------------------------------------- data / train


@dataclass
class DataConfig:
    """Where training data comes from and how it is batched."""

    path: str = "data/synthetic"
    """Prepared shard folder (or a source the loader understands)."""
    synth_n: int = 4000
    """If ``path`` does not exist and this is > 0, synthesise a survey of this many objects."""
    synth_seed: int = 0
    """Seed of the synthesised survey."""
    val_fraction: float = 0.1
    """Fraction of objects held out for validation (by a hash of the id: stable)."""
    batch_size: int = 16
    """Micro-batch size per process."""
    num_workers: int = 0
    """DataLoader worker processes."""
    augment: bool = False
    """Random flips, 90-degree rotations (images only; never colour changes)."""
    seed: int = 0
    """Seed of the shuffling order (with the epoch)."""

    def __post_init__(self) -> None:
        if self.batch_size <= 0:
            raise ConfigError(f"data.batch_size must be positive, got {self.batch_size}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(
                f"data.val_fraction must be in (0, 1), got {self.val_fraction}: training holds out a "
                "validation split (e.g. 0.05)"
            )
        if self.num_workers < 0:
            raise ConfigError(f"data.num_workers must be >= 0, got {self.num_workers}")
        if self.synth_n < 0:
            raise ConfigError(f"data.synth_n must be >= 0, got {self.synth_n}")


@dataclass
class TrainConfig:
    """Optimisation, precision, checkpointing and logging of a training run."""

    out_dir: str = "runs/tiny"
    objective: Literal["ar", "mae", "ar_mae"] = "ar"
    """``ar``: next-token prediction (causal attention); ``mae``: reconstruct the tokens hidden
    by ``mask_ratio`` (full attention); ``ar_mae``: both on each batch, summed as
    AR + ``mae_weight`` x MAE (one model with ``attn: causal``; the masked branch attends in
    full within the same forward pass)."""
    mask_ratio: float = 0.5
    """Fraction of tokens masked by the ``mae`` and ``ar_mae`` objectives."""
    mae_weight: float = 1.0
    """``ar_mae``: weight of the masked-token loss added to the AR loss."""
    norm_targets: bool = False
    """``mae``: standardise each target patch before the loss."""
    max_steps: int = 1000
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup_steps: int = 100
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = 1.0
    grad_accum: int = 1
    dtype: DtypeName = "auto"
    mixed_precision: MixedPrecisionName = "auto"
    """With a bf16/fp16 ``dtype``: ``autocast`` (per-op casts), ``cast_once`` (a low-precision
    copy of the weights, refreshed once per step from the fp32 master weights) or ``auto``."""
    attention: AttentionKernelName = "auto"
    """Attention kernel: ``sdpa``, ``recompute`` (a faster CPU backward in bf16, see
    ``astropt.model.attention``) or ``auto`` (recompute for bf16 on CPU)."""
    compile: bool = False
    malloc: MallocName = "auto"
    """CPU runs: ``auto`` keeps freed blocks of up to 32 MiB in the process for the next step
    (glibc's allocator tuned by ``mallopt``; measured 1.1x on the 24M bf16 step, same peak
    memory) unless an allocator is preloaded or the user set ``MALLOC_*``; ``system`` leaves
    the allocator alone."""
    device: str = "auto"
    fsdp: bool = False
    seed: int = 1337
    eval_interval: int = 100
    eval_batches: int = 8
    log_interval: int = 10
    ckpt_schedule: Literal["interval", "log", "even", "manual"] = "interval"
    ckpt_interval: int = 500
    ckpt_steps: list[int] = field(default_factory=list)
    ckpt_count: int = 10
    keep_last: int = 3
    tensorboard: bool = False
    wandb: bool = False
    wandb_project: str = "astropt"
    init_from: str = "scratch"
    """``scratch``, ``resume`` (same as ``--resume``) or a pretrained folder / hub id whose
    weights initialise the model."""
    peak_tflops: float = 0.0
    """Peak TFLOP/s per device for the MFU estimate (0: measured with a matmul at start)."""
    figures: bool = True
    """Write a reconstruction PNG at every evaluation."""

    def __post_init__(self) -> None:
        if self.max_steps <= 0:
            raise ConfigError(f"train.max_steps must be positive, got {self.max_steps}")
        if not 0.0 < self.mask_ratio < 1.0:
            raise ConfigError(f"train.mask_ratio must be in (0, 1), got {self.mask_ratio}")
        if not (math.isfinite(self.mae_weight) and self.mae_weight > 0):
            raise ConfigError(
                f"train.mae_weight must be a positive number, got {self.mae_weight}: it weighs the "
                "masked-token loss of objective ar_mae (1.0: equal to the AR loss)"
            )
        if self.grad_accum <= 0:
            raise ConfigError("train.grad_accum must be positive")
        for name in ("warmup_steps", "ckpt_interval", "ckpt_count", "keep_last", "eval_interval", "eval_batches",
                     "log_interval"):
            if getattr(self, name) < 0:
                raise ConfigError(f"train.{name} must be >= 0, got {getattr(self, name)}")
        if self.ckpt_schedule in ("log", "even") and self.ckpt_count <= 0:
            raise ConfigError(f"train.ckpt_schedule={self.ckpt_schedule} needs train.ckpt_count > 0")


@dataclass
class RunConfig:
    """A whole run: the model, its data and its training."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        # Cross-section checks: each section is valid alone, these hold between sections.
        want = "full" if self.train.objective == "mae" else "causal"  # ar_mae: causal, full per call
        if self.train.objective == "ar_mae":
            if self.model.backbone != "native":
                raise ConfigError(
                    "train.objective=ar_mae runs a full-attention pass of the model, which the "
                    f"{self.model.backbone!r} backbone (causal only) cannot; use objective ar or "
                    "model.backbone: native"
                )
            self.model.mask_token = True  # its masked branch hides tokens behind the mask token
        if self.model.attn != want:
            raise ConfigError(
                f"train.objective={self.train.objective!r} needs model.attn={want!r} "
                f"(got {self.model.attn!r}); set model.attn={want}"
            )


# ----------------------------------------------------------------------------- loading


def _defaults_as_data(cls: type) -> dict[str, Any]:
    data = to_dict(cls())
    model = data.get("model")
    if isinstance(model, dict) and "modalities" in model:
        # Keep only what defines the default modalities: their derived fields (input_size,
        # field, ...) must be derived again after overrides such as a new patch_size.
        model["modalities"] = [{"name": m["name"], "kind": m["kind"]} for m in model["modalities"]]
    return data


def load_config(
    path: str | os.PathLike | None = None,
    overrides: list[str] | None = None,
    cls: type[T] = RunConfig,  # type: ignore[assignment]
) -> T:
    """Load a config file (or the defaults), apply overrides, validate. Errors name the key."""
    data = read_file(path) if path is not None else {}
    if overrides:
        # Overrides may address list items that only exist in the defaults.
        if cls is RunConfig:
            base = _defaults_as_data(RunConfig)
            for section, value in data.items():
                if section in base and isinstance(value, dict):
                    base[section].update(value)
                else:
                    base[section] = value
            data = base
        data = apply_overrides(data, overrides)
    return from_dict(cls, data)
