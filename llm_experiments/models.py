"""Load a causal LM and its tokenizer, attach a peft module, and split base from adapter parameters.

* ``dtype`` is always passed to ``from_pretrained`` (transformers 5 defaults to ``dtype="auto"``, which
  would load fp16 checkpoints as fp16) and checked after loading.
* ``trust_remote_code`` is off unless asked for.
* A local folder is loaded with ``local_files_only=True``; a Hub id that cannot be reached gives one line
  saying how to use a local copy instead.
* The base/adapter split is *structural* (what peft marks as adapter: ``BaseTunerLayer.adapter_layer_names``,
  the prompt encoder of prompt-learning configs, ``ModulesToSaveWrapper.modules_to_save``), never by name
  strings, and tied weights (OPT's ``lm_head`` = ``embed_tokens``) appear once.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import UserError

TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16,
                "float64": torch.float64}


def torch_dtype(name: str) -> torch.dtype:
    if name not in TORCH_DTYPES:
        raise UserError(f"unknown dtype {name!r}; choose one of: {', '.join(TORCH_DTYPES)}")
    return TORCH_DTYPES[name]


def _looks_like_path(name: str) -> bool:
    """Hub ids are ``name`` or ``org/name``; anything else with a separator is meant as a path."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name


_REACHABLE: dict[str, bool] = {}


def _offline() -> bool:
    """HF_HUB_OFFLINE is set, or the Hub's host cannot be reached (one 3 s TCP probe per process), so that a
    machine without network fails in seconds with one line instead of minutes of client retries."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on"):
        return True
    import socket
    from urllib.parse import urlparse

    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    if host not in _REACHABLE:
        try:
            socket.create_connection((host, 443), timeout=3).close()
            _REACHABLE[host] = True
        except OSError:
            _REACHABLE[host] = False
    return not _REACHABLE[host]


def load_model_and_tokenizer(name: str, dtype: str, trust_remote_code: bool = False, device_map: str | None = None):
    """Return ``(model, tokenizer)`` for a Hub id or local folder, in ``dtype``, eval mode, on CPU.

    ``device_map="auto"`` (model parallel on one node, as MeZO) lets accelerate place the layers over the
    visible GPUs (then CPU); weights it would offload to disk are refused: the ZO step perturbs every weight in
    place, which needs them in memory.

    Raises :class:`UserError` for a missing path, an unreachable Hub id, or a folder that is not a causal LM.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(name).expanduser()
    local = path.exists()
    if not local and _looks_like_path(name):
        raise UserError(f"model path {name!r} does not exist")
    if local and not (path / "config.json").is_file():
        raise UserError(f"model folder {name!r} has no config.json: save it with save_pretrained or pass a Hub id")
    source = str(path) if local else name
    kwargs = dict(local_files_only=local or _offline(), trust_remote_code=trust_remote_code)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype(dtype),
                                                     **({"device_map": device_map} if device_map else {}), **kwargs)
    except UserError:
        raise
    except Exception as exc:  # OSError / ValueError / httpx errors from the Hub client: one line for the user
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        if local:
            raise UserError(f"cannot load model folder {name!r}: {first}") from None
        if "trust_remote_code" in str(exc):
            raise UserError(f"model {name!r} needs its own code from the Hub; pass --trust-remote-code if you "
                            "trust it") from None
        raise UserError(
            f"cannot load {name!r} from the Hugging Face Hub ({'no network or HF_HUB_OFFLINE set, and not in the local cache' if _offline() else first}); "
            f"without network, download it elsewhere (e.g. `hf download {name} --local-dir DIR`), copy DIR here "
            "and pass --model DIR") from None
    if tokenizer.pad_token_id is None:
        # LLaMA-family tokenizers have no pad token; padding positions are masked, so eos is a safe filler.
        tokenizer.pad_token = tokenizer.eos_token if tokenizer.eos_token is not None else tokenizer.unk_token
    # a single-device map sets no hf_device_map; disk-offloaded weights sit on the meta device
    placed = set((getattr(model, "hf_device_map", None) or {}).values()) | {p.device.type for p in model.parameters()}
    if placed & {"disk", "meta"}:
        raise UserError(f"device_map={device_map} offloads part of {name!r} to disk, but the ZO step needs every weight "
                        "in memory: free GPU or CPU memory, use a smaller model or a 16-bit --dtype")
    want = torch_dtype(dtype)
    if next(model.parameters()).dtype != want:  # cheap insurance against dtype being ignored
        model = model.to(want)
    if want == torch.float64:  # transformers' causal-LM loss casts logits to float32: keep float64 checks exact
        model.loss_function = causal_lm_loss_wide
    model.eval()
    return model, tokenizer


def causal_lm_loss_wide(logits, labels, vocab_size: int, num_items_in_batch=None, ignore_index: int = -100,
                        shift_labels=None, **kwargs) -> torch.Tensor:
    """transformers' ``ForCausalLMLoss`` (next-token cross-entropy, mean over counted tokens) computed in at
    least float32 but never *below* the logits' precision (the library's version rounds float64 to float32)."""
    import torch.nn.functional as F

    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    if shift_labels is None:
        shift_labels = F.pad(labels, (0, 1), value=ignore_index)[..., 1:].contiguous()
    logits = logits.view(-1, vocab_size)
    shift_labels = shift_labels.view(-1).to(logits.device)
    if num_items_in_batch is None:
        return F.cross_entropy(logits, shift_labels, ignore_index=ignore_index)
    return F.cross_entropy(logits, shift_labels, ignore_index=ignore_index, reduction="sum") / num_items_in_batch


def input_device(model) -> torch.device:
    """Where a model's inputs go: the device of its input embeddings (the first device of a device_map)."""
    return model.get_input_embeddings().weight.device


def checkpoint_layers(model) -> int:
    """Gradient checkpointing of the FO pass: every transformer block recomputes its forward in the backward
    instead of keeping its activations. Returns the number of blocks wrapped.

    transformers' own switch (``gradient_checkpointing_enable``) acts only in train mode, which would also turn
    on dropout; the trainer runs the FO pass in eval mode unless ``fo_dropout``, so each block's forward is
    wrapped here instead: checkpointed when autograd is on (the FO pass), a plain call otherwise (ZO forwards,
    evaluation). Non-reentrant checkpointing (PyTorch's recommended form) restores the RNG state, so a
    recomputed dropout mask equals the original one.
    """
    import functools

    from torch.utils.checkpoint import checkpoint
    from transformers.modeling_layers import GradientCheckpointingLayer

    def wrap(forward):
        @functools.wraps(forward)
        def run(*args, **kwargs):
            if torch.is_grad_enabled():
                return checkpoint(forward, *args, use_reentrant=False, **kwargs)
            return forward(*args, **kwargs)
        return run

    blocks = [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]
    for block in blocks:
        block.forward = wrap(block.forward)
    return len(blocks)


def peft_config_for(kind: str, lora_r: int = 8, lora_alpha: int = 16, lora_dropout: float = 0.0,
                    target_modules: list[str] | None = None, num_virtual_tokens: int = 10):
    """The peft config of ``kind`` (lora, ia3, prefix, prompt) for a causal LM."""
    from peft import IA3Config, LoraConfig, PrefixTuningConfig, PromptTuningConfig, TaskType

    if kind == "lora":
        return LoraConfig(task_type=TaskType.CAUSAL_LM, r=lora_r, lora_alpha=lora_alpha, lora_dropout=lora_dropout,
                          target_modules=target_modules)
    if kind == "ia3":
        return IA3Config(task_type=TaskType.CAUSAL_LM, target_modules=target_modules,
                         feedforward_modules=[] if target_modules else None)
    if kind == "prefix":
        return PrefixTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=num_virtual_tokens)
    if kind == "prompt":
        return PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=num_virtual_tokens)
    raise UserError(f"unknown PEFT kind {kind!r}; choose one of: lora, prefix, prompt, ia3")


@contextmanager
def seeded_global_init(seed: int):
    """Run weight initialisation that draws from torch's global generator as a pure function of ``seed``.

    transformers (``_init_weights``) and peft (adapter init) draw from torch's default generator and take
    no generator argument. Inside this context the global RNG is a fork seeded with ``seed``; the caller's
    state is restored on exit, so nothing else that uses the global RNG is coupled to it. This is the only
    place the package seeds the default generator.
    """
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(seed)
        yield


def attach_peft(model, kind: str, seed: int = 0, **options):
    """Wrap ``model`` with a fresh peft module of ``kind`` (adapter weights in fp32 for 16-bit models).

    peft initialises adapters (LoRA A, prefix/prompt embeddings) from torch's global generator. To make the
    adapter a pure function of ``seed`` without coupling to anyone else's use of that generator, the init
    runs inside ``torch.random.fork_rng`` seeded from ``seed``: the caller's global RNG state is restored on
    exit (the only place the package seeds torch's default generator, and only inside the fork).
    """
    from peft import get_peft_model

    from hybridtheory.algorithm import derive_seed

    config = peft_config_for(kind, **options)
    try:
        with seeded_global_init(derive_seed(seed, 3)):
            return get_peft_model(model, config)
    except ValueError as exc:  # e.g. no default target modules known for this architecture
        first = (str(exc).strip().splitlines() or ["ValueError"])[0]
        raise UserError(f"cannot attach {kind} to {type(model).__name__}: {first} (set --lora-target-modules)") from None


@dataclass
class ParamSplit:
    """De-duplicated parameters of a (peft) model: ``base`` (the pretrained weights) and ``adapter``."""

    base: list[tuple[str, torch.nn.Parameter]]
    adapter: list[tuple[str, torch.nn.Parameter]]

    def tensors(self, which: str) -> list[torch.nn.Parameter]:
        return [p for _, p in getattr(self, which)]

    def numel(self, which: str) -> int:
        return sum(p.numel() for _, p in getattr(self, which))


def _adapter_parameter_ids(model) -> set[int]:
    from peft import PeftModel
    from peft.tuners.tuners_utils import BaseTunerLayer
    from peft.utils import ModulesToSaveWrapper

    ids: set[int] = set()
    if not isinstance(model, PeftModel):
        return ids
    for module in model.modules():
        if isinstance(module, BaseTunerLayer):
            for attr in module.adapter_layer_names:
                holder = getattr(module, attr, None)
                if isinstance(holder, torch.nn.Module):
                    ids.update(id(p) for p in holder.parameters())
                elif isinstance(holder, torch.nn.Parameter):
                    ids.add(id(holder))
        elif isinstance(module, ModulesToSaveWrapper):
            ids.update(id(p) for p in module.modules_to_save.parameters())
    config = model.peft_config[model.active_adapter]
    if config.is_prompt_learning:
        ids.update(id(p) for p in model.prompt_encoder.parameters())
    return ids


def no_decay_parameter_ids(model) -> set[int]:
    """Ids of the parameters MeZO's weight decay skips: biases and the weights of normalisation layers.

    Decided by structure, not by names: a parameter registered as ``bias`` on its module, or any parameter of
    a module whose class is a normalisation layer (``LayerNorm``, LLaMA's ``LlamaRMSNorm``, ...; MeZO skips
    names containing ``bias``, ``layer_norm`` or ``layernorm``).
    """
    ids: set[int] = set()
    for module in model.modules():
        is_norm = isinstance(module, (torch.nn.LayerNorm, torch.nn.GroupNorm)) or "norm" in type(module).__name__.lower()
        for name, p in module.named_parameters(recurse=False):
            if is_norm or name == "bias":
                ids.add(id(p))
    return ids


def split_parameters(model) -> ParamSplit:
    """Base vs adapter parameters, by peft's structure, each tensor once (tied weights once).

    Ties are detected by object identity (``named_parameters`` already drops repeats) and, for safety, by
    shared storage: a second Parameter object viewing the same memory is not perturbed twice.
    """
    adapter_ids = _adapter_parameter_ids(model)
    seen_storage: set[tuple[int, int]] = set()
    base, adapter = [], []
    for name, p in model.named_parameters():  # remove_duplicate=True: tied Parameters appear once
        key = (p.untyped_storage().data_ptr(), p.storage_offset())
        if key in seen_storage:
            continue
        seen_storage.add(key)
        (adapter if id(p) in adapter_ids else base).append((name, p))
    return ParamSplit(base=base, adapter=adapter)
