"""The trunk of the model behind one small interface: our native GPT blocks, or a Hugging
Face causal language model (``model.backbone: llm``).

A backbone runs over the residual stream ``(B, T, C)`` that :class:`AstroPT` assembles:
``run(x, key_mask, upto, caches)`` returns the stream after block ``upto`` (no final norm),
``final(x, key_mask, caches)`` the normalised output the decoders read, ``layers`` the
stream after every block, ``new_caches`` an empty KV cache for generation.

The LLM backbone owns the LLM and its tokenizer, to which it adds the special tokens
``<|begin_{m}|>``, ``<|{m}|>`` and ``<|end_{m}|>`` of every modality ``m``. Observation
tokens sit where ``<|m|>`` placeholders would (their projection replaces the placeholder's
embedding); a modality's segment starts with the LLM's own embedding of ``<|begin_{m}|>``.
LoRA adapters (rank-stabilised, all linear layers) come from ``peft``; without a rank the
LLM is frozen. With ``model.text``, a record's text is tokenised by the LLM's own tokenizer
between ``<|begin_text|>`` and ``<|end_text|>`` (:meth:`LLMBackbone.text_ids`).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn as nn

from astropt.config import TEXT, ConfigError, ModelConfig
from astropt.model.io import LLM_FILES
from astropt.model.transformer import KVCache

log = logging.getLogger(__name__)

TEXT_BEGIN, TEXT_END = f"<|begin_{TEXT}|>", f"<|end_{TEXT}|>"
"""The special tokens around a record's text (added to the tokenizer with ``model.text``)."""
_BASE_WORDS = (
    "[UNK] [PAD] <|endoftext|> . , : ; = + - ( ) / the a of and is at with in galaxy star quasar "
    "spiral elliptical disc disk bulge bar merger edge on face red blue green bright faint "
    "compact extended round elongated redshift z mass magnitude colour color size radius "
    "ellipticity sersic index flux band g r i y spectrum image emission absorption line "
    "this object has shows an 0 1 2 3 4 5 6 7 8 9"
).split()


class NativeBackbone:
    """Our pre-LayerNorm GPT blocks and final LayerNorm (owned by the AstroPT module)."""

    def __init__(self, blocks: nn.ModuleList, ln_f: nn.Module, config: ModelConfig):
        self.blocks, self.ln_f, self.config = blocks, ln_f, config

    def run(self, x, key_mask=None, upto=None, caches=None, causal=None) -> torch.Tensor:
        last = len(self.blocks) - 1 if upto is None else upto
        for i, block in enumerate(self.blocks[: last + 1]):
            x = block(x, key_mask=key_mask, cache=None if caches is None else caches[i], causal=causal)
        return x

    def final(self, x, key_mask=None, caches=None, causal=None) -> torch.Tensor:
        """``causal``: this call's attention mask (None: the blocks' own, ``model.attn``)."""
        return self.ln_f(self.run(x, key_mask, caches=caches, causal=causal))

    def layers(self, x, key_mask=None) -> Iterator[torch.Tensor]:
        for block in self.blocks:
            x = block(x, key_mask=key_mask)
            yield x

    def new_caches(self, batch_size: int, max_len: int, like: torch.Tensor) -> list[KVCache]:
        c = self.config
        return [
            KVCache.empty(batch_size, c.n_head, max_len, c.n_embd // c.n_head, like)
            for _ in range(c.n_layer)
        ]


def special_tokens(names: list[str]) -> list[str]:
    """The modality tokens added to the LLM's tokenizer, three per modality."""
    return [t for m in names for t in (f"<|begin_{m}|>", f"<|{m}|>", f"<|end_{m}|>")]


def model_special_tokens(config: ModelConfig) -> list[str]:
    """Every special token of a model: its modalities', and the text's with ``model.text``."""
    text = [TEXT_BEGIN, TEXT_END] if config.text.enabled else []
    return special_tokens([m.name for m in config.modalities]) + text


def _require_llm_extra() -> None:
    missing = [m for m in ("transformers", "tokenizers") if importlib.util.find_spec(m) is None]
    if missing:
        raise ImportError(
            f"model.backbone 'llm' needs {missing}: install the 'llm' extra "
            "(pip install 'astropt[llm]')"
        )


class LLMBackbone(nn.Module):
    """A Hugging Face causal LM (optionally with LoRA adapters) as the trunk."""

    def __init__(self, config: ModelConfig, files: str | os.PathLike | None = None):
        """Args:
        files: a saved model's ``llm`` folder (LLM config + tokenizer): the LLM is built
            from it with random weights, to be overwritten by the saved state.
        """
        super().__init__()
        _require_llm_extra()
        self.config = config
        tokens = model_special_tokens(config)
        if files is not None:
            self.tokenizer, model = _from_files(str(files))
        elif config.llm.model_name:
            self.tokenizer, model = _from_hub(config)
        else:
            self.tokenizer, model = _built(config, tokens)
        _add_special_tokens(self.tokenizer, model, tokens)
        _check_shape(config, model.config)
        self.special_ids = {t: self.tokenizer.convert_tokens_to_ids(t) for t in tokens}
        self.model = _adapt(model, config)

    # ----------------------------------------------------------------- parts of the LLM
    def base(self) -> nn.Module:
        """The causal LM itself (under the peft wrapper, if any)."""
        return self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model

    def token_embeddings(self, ids: torch.Tensor) -> torch.Tensor:
        return self.base().get_input_embeddings()(ids)

    def special_embedding(self, kind: str, modality: str) -> torch.Tensor:
        """``(C,)`` embedding of ``<|begin_m|>`` (kind ``begin``), ``<|m|>`` or ``<|end_m|>``."""
        token = {"begin": f"<|begin_{modality}|>", "end": f"<|end_{modality}|>"}.get(kind, f"<|{modality}|>")
        ids = torch.tensor([self.special_ids[token]], device=self.base().get_input_embeddings().weight.device)
        return self.token_embeddings(ids)[0]

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Next-text-token logits ``(..., vocab)`` from final hidden states."""
        return self.base().get_output_embeddings()(hidden)

    def encode_text(self, texts: list[str], device=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids ``(B, L)`` and mask of captions / catalogue lines (right-padded)."""
        enc = self.tokenizer(list(texts), add_special_tokens=False, padding=True, return_tensors="pt")
        return enc["input_ids"].to(device), enc["attention_mask"].bool().to(device)

    def text_ids(self, texts: list[str], max_tokens: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Ids ``(B, L)`` and mask of ``<|begin_text|> text <|end_text|>`` per record, the
        text cut to ``max_tokens`` tokens (right-padded; the mask is False on padding)."""
        if TEXT_BEGIN not in self.special_ids:
            raise ValueError(
                "this model was built without model.text, so its tokenizer has no "
                f"{TEXT_BEGIN}/{TEXT_END}; set model.text (and train) to give it text"
            )
        encoded = self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]
        self._warn_unknown_words(texts, encoded)
        begin, end = self.special_ids[TEXT_BEGIN], self.special_ids[TEXT_END]
        rows = [[begin, *ids[:max_tokens], end] for ids in encoded]
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else end
        ids = torch.full((len(rows), max(len(r) for r in rows)), pad, dtype=torch.int64)
        mask = torch.zeros(ids.shape, dtype=torch.bool)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = True
        return ids.to(device), mask.to(device)

    def _warn_unknown_words(self, texts: list[str], encoded: list[list[int]]) -> None:
        """Once per model: text the tokenizer does not know (a built word-level tokenizer
        knows ``llm.vocab`` and a small list) is learnt as ``unk``, so say which text."""
        unk = self.tokenizer.unk_token_id
        if unk is None or getattr(self, "_warned_unknown", False):
            return
        for text, ids in zip(texts, encoded, strict=True):
            if unk in ids:
                self._warned_unknown = True
                log.warning("text %r has words the LLM's tokenizer does not know (tokenised as %s); "
                            "add them to model.llm.vocab for a built tokenizer", text, self.tokenizer.unk_token)
                return

    def decode_text(self, ids: list[int]) -> str:
        """Generated ids -> text, cut at the first ``<|end_text|>`` or end-of-text token."""
        stops = {self.tokenizer.eos_token_id, self.special_ids.get(TEXT_END)} - {None}
        cut = next((k for k, i in enumerate(ids) if i in stops), len(ids))
        return self.tokenizer.decode(ids[:cut], skip_special_tokens=False)

    # ----------------------------------------------------------------- backbone interface
    def _hidden_states(self, x, key_mask, caches) -> tuple[torch.Tensor, ...]:
        """The decoder's hidden states: ``[inputs, block 0, ..., block n-2, norm(block n-1)]``."""
        attention_mask = None if key_mask is None else key_mask.long()
        out = self.base().base_model(
            inputs_embeds=x, attention_mask=attention_mask, cache=caches,
            use_cache=caches is not None, output_hidden_states=True,
        )
        return out.hidden_states

    def run(self, x, key_mask=None, upto=None, caches=None) -> torch.Tensor:
        """Stream after block ``upto`` (the LLM's last block comes with its final norm: the
        Hugging Face models only expose that one normalised)."""
        hidden = self._hidden_states(x, key_mask, caches)
        return hidden[-1] if upto is None else hidden[upto + 1]

    def final(self, x, key_mask=None, caches=None, causal=None) -> torch.Tensor:
        if causal is False:
            raise ValueError("the llm backbone attends causally only; full attention (the masked "
                             "branch of objective ar_mae) needs model.backbone: native")
        return self._hidden_states(x, key_mask, caches)[-1]

    def layers(self, x, key_mask=None) -> Iterator[torch.Tensor]:
        yield from self._hidden_states(x, key_mask, None)[1:]

    def new_caches(self, batch_size: int, max_len: int, like: torch.Tensor):
        from transformers import DynamicCache

        return DynamicCache(config=self.base().config)

    # ----------------------------------------------------------------- files
    def save_files(self, directory: str | os.PathLike) -> Path:
        """Write the LLM config and tokenizer to ``directory/llm`` (replaced as a whole)."""
        directory = Path(directory)
        target = directory / LLM_FILES
        tmp = Path(tempfile.mkdtemp(prefix=".llm-", dir=directory))
        try:
            self.base().config.save_pretrained(tmp)
            self.tokenizer.save_pretrained(tmp)
            if target.exists():
                shutil.rmtree(target)
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return target


def _from_files(source: str):
    """Tokenizer and a randomly initialised LLM from a folder (or hub id) of config files."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    if Path(source).is_dir() and not (Path(source) / "config.json").is_file():
        raise FileNotFoundError(f"{source}: no LLM config.json; the saved model's '{LLM_FILES}' folder is incomplete")
    tokenizer = AutoTokenizer.from_pretrained(source)
    return tokenizer, AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(source))


def _from_hub(config: ModelConfig):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    llm = config.llm
    kwargs = {"revision": llm.revision} if llm.revision else {}
    tokenizer = AutoTokenizer.from_pretrained(llm.model_name, **kwargs)
    if llm.qlora and _qlora_available():
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
    return tokenizer, AutoModelForCausalLM.from_pretrained(llm.model_name, **kwargs)


def _qlora_available() -> bool:
    """4-bit loading needs bitsandbytes and a CUDA GPU; otherwise QLoRA is skipped (with a
    warning: the LLM loads at full precision and LoRA still applies)."""
    reason = None
    if importlib.util.find_spec("bitsandbytes") is None:
        reason = "bitsandbytes is not installed (pip install bitsandbytes)"
    elif not torch.cuda.is_available():
        reason = "no CUDA GPU is available"
    if reason:
        log.warning("model.llm.qlora: 4-bit loading skipped because %s; loading at full precision", reason)
    return reason is None


def _built(config: ModelConfig, tokens: list[str]):
    """A small Llama-architecture LM with random weights and a word-level tokenizer."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    words = list(dict.fromkeys(_BASE_WORDS + list(config.llm.vocab)))
    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    # Numbers digit by digit, so that catalogue values are words of the vocabulary.
    core.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Whitespace(), pre_tokenizers.Digits(individual_digits=True)]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, unk_token="[UNK]", pad_token="[PAD]", eos_token="<|endoftext|>"
    )
    tokenizer.add_special_tokens({"additional_special_tokens": tokens})
    c = config
    arch = LlamaConfig(
        hidden_size=c.n_embd, num_hidden_layers=c.n_layer, num_attention_heads=c.n_head,
        num_key_value_heads=c.llm.n_kv_head or c.n_head,
        intermediate_size=c.llm.intermediate_size or 4 * c.n_embd,
        vocab_size=len(tokenizer), max_position_embeddings=c.block_size,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=None,
    )
    return tokenizer, LlamaForCausalLM(arch)


def _add_special_tokens(tokenizer, model: nn.Module, tokens: list[str]) -> None:
    new = [t for t in tokens if t not in tokenizer.get_vocab()]
    if new:
        tokenizer.add_special_tokens({"additional_special_tokens": new})
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer))


def _check_shape(config: ModelConfig, arch) -> None:
    """The model section must describe the LLM, so that the config alone gives the shape."""
    have = {"n_layer": arch.num_hidden_layers, "n_head": arch.num_attention_heads, "n_embd": arch.hidden_size}
    wrong = {k: v for k, v in have.items() if getattr(config, k) != v}
    if wrong:
        name = config.llm.model_name or "the built LLM"
        raise ConfigError(
            f"model: {name} has " + ", ".join(f"{k}={v}" for k, v in have.items())
            + f"; set {', '.join(f'model.{k}={v}' for k, v in wrong.items())}"
        )


def _adapt(model: nn.Module, config: ModelConfig) -> nn.Module:
    """Rank-stabilised LoRA on all linear layers (``lora_r > 0``), else a frozen LLM."""
    llm = config.llm
    if llm.lora_r <= 0:
        model.requires_grad_(False)
        return model
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if getattr(model, "is_loaded_in_4bit", False):
        model = prepare_model_for_kbit_training(model)
    lora = LoraConfig(r=llm.lora_r, lora_alpha=llm.lora_alpha, use_rslora=True,
                      target_modules="all-linear", lora_dropout=0.0, task_type="CAUSAL_LM")
    return get_peft_model(model, lora)
