"""Run configuration: one flat dataclass, JSON/YAML files, and CLI flags that round-trip with them.

Every field carries ``help`` metadata (shown by ``llm-hybrid train --help``). A config file holds a
subset of the fields; CLI flags override the file; :func:`TrainConfig.to_cli_args` writes the flags that
rebuild the same config (``parse_train_args(cfg.to_cli_args()) == cfg``). :meth:`TrainConfig.validate`
turns every bad value into one :class:`~llm_experiments.errors.UserError` line.
"""
from __future__ import annotations

import argparse
import json
import math
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from hybridtheory.io import atomic_write_text

from .errors import UserError

METHODS = ("hybrid", "fo-full", "fo-peft", "zo-full", "zo-peft")
PEFT_KINDS = ("lora", "prefix", "prompt", "ia3")
DTYPES = ("float32", "bfloat16", "float16", "float64")
FO_OPTIMIZERS = ("sgd", "adam", "adamw")
ZO_LAWS = ("gaussian", "sphere", "rademacher")
ZO_DIFFERENCES = ("central", "forward")
FO_POINTS = ("jacobi", "gauss_seidel", "perturbed")
SAMPLINGS = ("reshuffle", "replacement")
MASTERS = ("auto", "none", "float32", "fp32", "float64", "stochastic", "compensated")
SELECTIONS = ("best_dev", "last")
SAVE_MODES = ("separate", "merged", "none")
DEVICES = ("auto", "cpu", "cuda")
OBJECTIVE_CHOICES = ("auto", "classification", "lm")
LR_SCHEDULES = ("constant", "linear")
FO_PRECISIONS = ("auto", "amp", "fp32", "native")
WINOGRANDE_CHOICES = ("zo-bench", "partial")
CHECKPOINT_BASES = ("full", "replay")
DISPLACEMENT_STARTS = ("reload", "memory")


def _f(default: Any, help: str, choices: tuple | None = None, kind: type | None = None, nargs: str | None = None,
       trajectory: bool = True):
    """A config field. ``trajectory=False`` marks a field that cannot change what a run computes (outputs,
    logging, progress): ``--resume`` lets it change; every other field must match the saved config."""
    kind = kind or type(default)
    return field(default=default, metadata={"help": help, "choices": choices, "kind": kind, "nargs": nargs,
                                            "trajectory": trajectory})


@dataclass
class TrainConfig:
    """One training run (model x task x method x seed)."""

    # model
    model: str = _f("", "Hugging Face causal-LM id (e.g. facebook/opt-1.3b) or a local folder", kind=str)
    dtype: str = _f("float32", "dtype the model is loaded in (always passed explicitly; float64 for exact checks "
                               "on tiny models)", DTYPES)
    trust_remote_code: bool = _f(False, "allow model code from the Hub (off: never runs remote code)",
                                 trajectory=False)
    device: str = _f("auto", "auto (cuda if available), cpu or cuda", DEVICES, trajectory=False)
    device_map: str = _f("none", "auto: split the model's layers over this node's GPUs (model parallel, as MeZO); "
                                 "none: the whole model on --device", ("none", "auto"), trajectory=False)
    gradient_checkpointing: bool = _f(False, "recompute each block's activations in the FO backward (less memory, "
                                             "one more forward of the FO pass)", trajectory=False)
    fsdp: bool = _f(False, "shard the base weights over the ranks with FSDP2 (fully_shard): each rank perturbs and "
                           "updates its shard only; the adapter stays whole (hybrid, zo-full, fo-peft, zo-peft)",
                    trajectory=False)
    dist_timeout_s: float = _f(600.0, "distributed runs (torchrun / accelerate launch): seconds a collective may wait "
                                      "for the other ranks before the run stops with one line", trajectory=False)
    # task and data
    task: str = _f("sst2", "task name: sst2, wsc or winogrande (llm_experiments.tasks.TASKS)", kind=str)
    data: str | None = _f(None, "local data: a folder or file (JSONL/CSV/parquet) with the task's fields; "
                                "default: the task's HF dataset id (needs network or a cache)", kind=str)
    n_train: int = _f(1000, "training examples sampled (MeZO protocol)")
    n_dev: int = _f(500, "dev examples (model selection); carved from train, capped for small sets")
    n_eval: int = _f(1000, "evaluation examples (sampled from the public validation split)")
    data_seed: int = _f(0, "seed of the train/dev/eval sampling")
    max_length: int = _f(256, "max tokens per sequence (training and evaluation; the prompt is cut from the left)")
    objective: str = _f("auto", "training objective: classification (CE over the candidates' scores), lm (gold "
                                "continuation) or auto (the task's published protocol)", OBJECTIVE_CHOICES)
    winogrande_scoring: str = _f("zo-bench", "WinoGrande candidates: zo-bench (option + suffix given the prefix) "
                                             "or partial (lm-eval: suffix given prefix + option)", WINOGRANDE_CHOICES)
    # method
    method: str = _f("hybrid", "hybrid: base ZO + adapter FO; fo-full; fo-peft; zo-full (MeZO); zo-peft", METHODS)
    peft: str = _f("lora", "PEFT kind for hybrid / fo-peft / zo-peft (ignored by full methods)", PEFT_KINDS)
    lora_r: int = _f(8, "LoRA rank")
    lora_alpha: int = _f(16, "LoRA alpha")
    lora_dropout: float = _f(0.0, "LoRA dropout (active only in the FO pass when fo_dropout is on)")
    lora_target_modules: list | None = _f(None, "LoRA/IA3 target modules (default: peft's table for the architecture)",
                                          kind=str, nargs="+")
    num_virtual_tokens: int = _f(10, "virtual tokens for prefix / prompt tuning")
    # step sizes and estimator
    lr_base: float = _f(1e-6, "step size of the base weights (ZO for hybrid/zo-full, FO for fo-full)")
    lr_adapter: float = _f(1e-3, "step size of the PEFT module (FO for hybrid/fo-peft, ZO for zo-peft)")
    fo_optimizer: str = _f("sgd", "FO update: sgd (the theory's) or an inner torch.optim adam / adamw", FO_OPTIMIZERS)
    weight_decay: float = _f(0.0, "weight decay of the inner adam/adamw")
    zo_weight_decay: float = _f(0.0, "MeZO's ZO weight decay: theta <- theta - lr (c u + wd theta) on ZO blocks, "
                                     "biases and normalisation weights excluded")
    lr_schedule: str = _f("constant", "step-size schedule of every block: constant, or linear (warm-up then linear "
                                      "decay to 0, as HF's get_linear_schedule_with_warmup)", LR_SCHEDULES)
    warmup_steps: int = _f(0, "linear warm-up steps of lr_schedule=linear")
    fo_precision: str = _f("auto", "FO block of a 16-bit model: amp (fp32 weights, autocast forwards), fp32, or native "
                                   "(updated in 16-bit); auto: amp for fo-full, native otherwise", FO_PRECISIONS)
    max_grad_norm: float = _f(0.0, "clip the FO gradient (all FO tensors together) to this L2 norm; 0: no clipping "
                                   "(MeZO's FO baselines: 1.0)")
    mu: float = _f(1e-3, "ZO smoothing radius (perturbation size)")
    zo_law: str = _f("gaussian", "ZO direction law (gaussian as MeZO, or sphere)", ZO_LAWS)
    zo_difference: str = _f("central", "central (2 extra forwards) or forward (1, reuses the FO loss)", ZO_DIFFERENCES)
    zo_queries: int = _f(1, "q >= 1 directions per step")
    fo_point: str = _f("jacobi", "where the FO gradient is taken (hybrid): jacobi, gauss_seidel or perturbed", FO_POINTS)
    fo_dropout: bool = _f(False, "dropout in the FO pass (ZO forwards never use dropout)")
    base_master: str = _f("auto", "how a 16-bit ZO base stores its updates: float32/fp32 (master copy, 4 B/param), "
                                  "compensated (int16 error buffer, 2 B/param), stochastic (stochastic rounding, "
                                  "no memory), none (in place, as MeZO), float64; auto: the first that fits in "
                                  "free memory (none for float32 models)", MASTERS)
    # loop
    batch_size: int = _f(16, "examples per step")
    micro_batches: int = _f(1, "split each step's batch into this many sequential forwards (accumulation)")
    steps: int = _f(1000, "training steps")
    sampling: str = _f("reshuffle", "data order: reshuffle (random reshuffling) or replacement", SAMPLINGS)
    seed: int = _f(0, "run seed (directions, data order)")
    eval_every: int = _f(0, "evaluate on dev every this many steps (0: only at the end)")
    eval_batch_size: int = _f(16, "candidates scored per batch in evaluation")
    select: str = _f("best_dev", "model to evaluate and save: best_dev (by dev accuracy) or last", SELECTIONS)
    log_every: int = _f(1, "write a metrics.jsonl line every this many steps", trajectory=False)
    track_displacement: bool = _f(True, "log ||block - block_start|| at evaluations (see --displacement-start)",
                                  trajectory=False)
    displacement_start: str = _f("reload", "where the displacement's start of a ZO/FO-trained base comes from: reload "
                                           "(re-read from --model at each evaluation, no resident copy) or memory "
                                           "(a CPU copy of the base kept for the whole run)", DISPLACEMENT_STARTS,
                                 trajectory=False)
    phase_detail: bool = _f(False, "per-phase times and peak memory on CUDA (synchronises the GPU at every phase; "
                                   "CPU always has them)", trajectory=False)
    # outputs
    output_dir: str = _f("runs/run", "run folder", kind=str, trajectory=False)
    checkpoint_base: str = _f("full", "what checkpoints hold of a ZO-trained base: full (every tensor) or replay (the "
                                      "step seeds, coefficients and step sizes; the base is rebuilt on resume by "
                                      "replaying the updates from --model's weights)", CHECKPOINT_BASES,
                              trajectory=False)
    save_model: str = _f("separate", "separate (base + adapter folders), merged (LoRA/IA3 merged into base) or none",
                         SAVE_MODES, trajectory=False)
    progress: bool = _f(True, "show progress bars", trajectory=False)

    # ------------------------------------------------------------------ validation
    def validate(self) -> "TrainConfig":
        """Raise :class:`UserError` (one line) on the first invalid value; return self."""
        for f in fields(self):
            choices = f.metadata.get("choices")
            if choices and getattr(self, f.name) not in choices:
                raise UserError(f"unknown {f.name} {getattr(self, f.name)!r}; choose one of: {', '.join(choices)}")
        if not self.model:
            raise UserError("no model given: pass --model with a Hugging Face id or a local folder")
        for name in ("lr_base", "lr_adapter", "weight_decay", "zo_weight_decay", "max_grad_norm"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise UserError(f"invalid {name} {value!r}: must be a finite number >= 0")
        if not (isinstance(self.dist_timeout_s, (int, float)) and math.isfinite(self.dist_timeout_s)
                and self.dist_timeout_s > 0):
            raise UserError(f"invalid dist_timeout_s {self.dist_timeout_s!r}: must be a finite number of seconds > 0")
        if not (isinstance(self.mu, (int, float)) and math.isfinite(self.mu) and self.mu > 0):
            raise UserError(f"invalid mu {self.mu!r}: the ZO smoothing radius must be a finite number > 0")
        for name in ("n_train", "batch_size", "micro_batches", "steps", "zo_queries", "max_length", "eval_batch_size",
                     "log_every", "lora_r", "num_virtual_tokens"):
            if getattr(self, name) < 1:
                raise UserError(f"invalid {name} {getattr(self, name)!r}: must be >= 1")
        for name in ("n_dev", "n_eval", "eval_every", "seed", "data_seed", "warmup_steps"):
            if getattr(self, name) < 0:
                raise UserError(f"invalid {name} {getattr(self, name)!r}: must be >= 0")
        if self.max_length < 2:
            raise UserError(f"invalid max_length {self.max_length!r}: must be >= 2 (a context token and an answer token)")
        if self.micro_batches > self.batch_size:
            raise UserError(f"micro_batches ({self.micro_batches}) cannot exceed batch_size ({self.batch_size})")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise UserError(f"invalid lora_dropout {self.lora_dropout!r}: must be in [0, 1)")
        if self.zo_difference == "forward" and self.fo_dropout and self.method == "hybrid":
            raise UserError("zo_difference=forward reuses the FO pass's loss as f(x); that needs a deterministic FO "
                            "pass: drop --fo-dropout or use --zo-difference central")
        if self.fsdp and self.method == "fo-full":
            raise UserError("--fsdp shards a ZO-trained or frozen base; fo-full trains the base by backprop: run it "
                            "data parallel (without --fsdp)")
        if self.checkpoint_base == "replay" and self.method == "fo-full":
            raise UserError("--checkpoint-base replay rebuilds a ZO-trained base from its update log; fo-full trains "
                            "the base by backprop: use --checkpoint-base full")
        if self.fsdp and self.device_map != "none":
            raise UserError("--fsdp and --device-map auto both place the base weights: use one")
        if self.device_map != "none" and self.device == "cpu":
            raise UserError("device_map=auto places layers on GPUs; with --device cpu leave --device-map none")
        if self.base_master in ("stochastic", "compensated") and self.dtype not in ("bfloat16", "float16"):
            raise UserError(f"base_master={self.base_master} changes how 16-bit weights store updates; with "
                            f"--dtype {self.dtype} use none (or float64), or load the model in bfloat16/float16")
        if self.save_model == "merged" and self.uses_peft and self.peft in ("prefix", "prompt"):
            raise UserError(f"save_model=merged needs a mergeable adapter (lora, ia3), not {self.peft}; use separate")
        return self

    @property
    def uses_peft(self) -> bool:
        return self.method in ("hybrid", "fo-peft", "zo-peft")

    # ------------------------------------------------------------------ paths and resume fingerprint
    def with_absolute_paths(self) -> "TrainConfig":
        """Local model/data paths and the output folder made absolute (a saved config re-runs from anywhere);
        a Hub id (no such local path) stays as it is."""
        values = self.to_dict()
        for name in ("model", "data"):
            if values[name] and Path(values[name]).expanduser().exists():
                values[name] = str(Path(values[name]).expanduser().resolve())
        values["output_dir"] = str(Path(self.output_dir).expanduser().resolve())
        return TrainConfig(**values)

    def differences(self, other: "TrainConfig") -> tuple[list[str], list[str]]:
        """Fields whose values differ from ``other``: (trajectory-changing, others), each sorted."""
        changed = [f for f in fields(self) if getattr(self, f.name) != getattr(other, f.name)]
        return (sorted(f.name for f in changed if f.metadata["trajectory"]),
                sorted(f.name for f in changed if not f.metadata["trajectory"]))

    # ------------------------------------------------------------------ dict / file round trip
    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict, where: str = "config") -> "TrainConfig":
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise UserError(f"{where}: unknown field(s) {', '.join(unknown)}")
        values = {name: _coerce(known[name], value, where) for name, value in data.items()}
        return cls(**values)

    def to_cli_args(self) -> list[str]:
        """Flags that rebuild this config with :func:`parse_train_args` (defaults included, so it is explicit)."""
        args: list[str] = []
        for f in fields(self):
            value = getattr(self, f.name)
            flag = "--" + f.name.replace("_", "-")
            if f.metadata["kind"] is bool:
                args.append(flag if value else "--no-" + f.name.replace("_", "-"))
            elif value is None:
                continue
            elif f.metadata.get("nargs"):
                args += [flag, *[str(v) for v in value]]
            else:
                args += [flag, repr(value) if isinstance(value, float) else str(value)]
        return args


def _coerce(f, value: Any, where: str) -> Any:
    """Cast a file value to the field's type (YAML reads 1e-6 as a string)."""
    kind = f.metadata["kind"]
    if value is None:
        return None
    try:
        if f.metadata.get("nargs"):
            if isinstance(value, str):
                value = [value]
            return [kind(v) for v in value]
        if kind is bool:
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("true", "1", "yes", "on"):
                return True
            if str(value).lower() in ("false", "0", "no", "off"):
                return False
            raise ValueError(value)
        if kind is int:
            as_float = float(value)
            if as_float != int(as_float):
                raise ValueError(value)
            return int(as_float)
        return kind(value)
    except (TypeError, ValueError):
        raise UserError(f"{where}: field {f.name} expects {kind.__name__}, got {value!r}") from None


def load_mapping(path: str | Path) -> dict:
    """Read a JSON or YAML file into a dict (``yaml.safe_load``; never executes anything)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file {str(path)!r} does not exist")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml
            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as exc:  # parse errors of either format: one line with the position
        raise UserError(f"cannot parse config file {str(path)!r}: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise UserError(f"config file {str(path)!r} must hold a mapping of field: value")
    return data


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per field; defaults are None so that only flags given on the command line override a file."""
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        meta = f.metadata
        default_text = f" (default: {f.default})"
        if meta["kind"] is bool:
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None,
                                help=meta["help"] + default_text)
        else:
            parser.add_argument(flag, dest=f.name, default=None, nargs=meta.get("nargs"),
                                help=meta["help"] + default_text + (
                                    f"; one of {', '.join(meta['choices'])}" if meta.get("choices") else ""))


def config_from_namespace(ns: argparse.Namespace) -> TrainConfig:
    """File (``--config``) first, then the flags given on the command line; validated."""
    data = load_mapping(ns.config) if getattr(ns, "config", None) else {}
    where = f"config file {ns.config!r}" if getattr(ns, "config", None) else "config"
    cfg = TrainConfig.from_dict(data, where)
    overrides = {f.name: getattr(ns, f.name) for f in fields(TrainConfig) if getattr(ns, f.name, None) is not None}
    from_flags = TrainConfig.from_dict(overrides, "command line")
    merged = cfg.to_dict() | {name: getattr(from_flags, name) for name in overrides}
    return TrainConfig(**merged).validate()


def parse_train_args(argv: list[str]) -> TrainConfig:
    """Parse ``train`` flags (used by the CLI and by the round-trip test)."""
    parser = argparse.ArgumentParser(prog="llm-hybrid train")
    parser.add_argument("--config", default=None, help="JSON or YAML file with config fields")
    add_config_arguments(parser)
    return config_from_namespace(parser.parse_args(argv))


def write_config(cfg: TrainConfig, path: str | Path) -> None:
    """Write the config as JSON (atomically)."""
    atomic_write_text(Path(path), json.dumps(cfg.to_dict(), indent=2, sort_keys=True) + "\n")


# ---------------------------------------------------------------------- grids (validate)
@dataclass
class GridConfig:
    """A grid of runs: ``models x tasks x methods x seeds``, each cell a :class:`TrainConfig`.

    File layout (YAML or JSON)::

        output_root: runs/paper
        base: {dtype: bfloat16, steps: 20000, ...}        # fields common to every run
        models: [{model: facebook/opt-1.3b}, ...]          # each entry: model + optional overrides
        tasks: [sst2, wsc, winogrande]
        task_overrides: {wsc: {n_dev: 100}}
        methods: {hybrid: {lr_base: 1e-7, lr_adapter: 1e-4}, fo-full: {...}}   # name -> overrides
        seeds: [0, 1, 2]

    A ``methods`` key is a label; its overrides must include ``method`` unless the label is a method name.
    """

    output_root: str = "runs/grid"
    base: dict = field(default_factory=dict)
    models: list = field(default_factory=list)
    tasks: list = field(default_factory=list)
    task_overrides: dict = field(default_factory=dict)
    methods: dict = field(default_factory=dict)
    seeds: list = field(default_factory=lambda: [0])

    @classmethod
    def from_file(cls, path: str | Path) -> "GridConfig":
        data = load_mapping(path)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UserError(f"grid file {str(path)!r}: unknown key(s) {', '.join(unknown)}")
        return cls(**data)

    def expand(self) -> list[TrainConfig]:
        """Every cell as a validated TrainConfig with its own output_dir."""
        shapes = {"base": (dict, "a mapping of field: value"), "models": (list, "a list of model ids or mappings"),
                  "tasks": (list, "a list of task names"), "task_overrides": (dict, "a mapping task: {field: value}"),
                  "methods": (dict, "a mapping label: {field: value}"), "seeds": (list, "a list of integers, e.g. [0, 1, 2]")}
        for key, (kind, form) in shapes.items():
            if not isinstance(getattr(self, key), kind):
                raise UserError(f"grid key {key} must be {form}, got {getattr(self, key)!r}")
        if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in self.seeds):
            raise UserError(f"grid key seeds must be a list of integers >= 0, got {self.seeds!r}")
        if not all(isinstance(v, dict) or v is None for v in self.methods.values()):
            raise UserError("grid key methods must map each label to a mapping of field: value (or nothing)")
        if not (self.models and self.tasks and self.methods and self.seeds):
            raise UserError("grid needs non-empty models, tasks, methods and seeds")
        runs = []
        for model_entry in self.models:
            model_entry = {"model": model_entry} if isinstance(model_entry, str) else dict(model_entry)
            slug = model_entry.pop("name", None) or str(model_entry["model"]).rstrip("/").split("/")[-1]
            for task in self.tasks:
                for label, overrides in self.methods.items():
                    overrides = dict(overrides or {})
                    overrides.setdefault("method", label)
                    for seed in self.seeds:
                        data = {**self.base, **model_entry, "task": task, **self.task_overrides.get(task, {}),
                                **overrides, "seed": seed}
                        data["output_dir"] = str(Path(self.output_root) / slug / task / label / f"seed{seed}")
                        runs.append(TrainConfig.from_dict(data, f"grid cell {slug}/{task}/{label}/seed{seed}").validate())
        return runs


def trajectory_fields() -> list[str]:
    """Fields that change what a run computes (compared by ``--resume``)."""
    return [f.name for f in fields(TrainConfig) if f.metadata["trajectory"]]


def field_defaults() -> dict:
    return {f.name: f.default for f in fields(TrainConfig) if f.default is not MISSING}
