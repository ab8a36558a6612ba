r"""One table of task specifications: where the data lives, which fields it has, how it is prompted and scored.

Every task reduces to the same scoring problem (see DATA.md): an example becomes a :class:`Candidates`, a tuple
of ``(context, continuation)`` text pairs plus the index of the correct one. The model's score of candidate
``k`` is its mean per-token log-probability of ``continuation_k`` given ``context_k``
(:mod:`llm_experiments.scoring`); the prediction is the argmax. The split between context and continuation is
exactly where the published code puts it: nothing is moved into an answer (WSC's prompt ends in a newline,
and its candidates are the bare words "No" / "Yes"). Scoring modes:

* ``"label_words"`` (classification; MeZO ``large_models/templates.py`` convention; see DATA.md): one
  shared prompt as context, one verbalizer word per class as continuation.
* ``"option_suffix"`` (WinoGrande's default; ZO-Bench ``WinoGrandeTemplate``): the text before the blank is
  the shared context; candidate ``k`` is option ``k`` followed by the text after the blank.
* ``"partial"`` (WinoGrande option; lm-eval ``partial_context``/``partial_target``): the text before the blank
  with option ``k`` substituted is context ``k``; the text after the blank is the shared continuation, so both
  options are judged on the *same* tokens.
* ``"choices"`` (COPA): one shared context, each answer choice is a continuation.

Objectives (``TaskSpec.objective``, the published default per task; config ``objective`` overrides it):
``"classification"`` is cross-entropy over the candidates' scores (MeZO's ``--train_as_classification``, used by
MeZO and ZO-Bench for SST-2, WSC, RTE, BoolQ); ``"lm"`` is the token-mean negative log-likelihood of the gold
candidate's continuation (ZO-Bench's WinoGrande, MeZO's COPA). This module imports nothing heavy.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Literal

from .errors import UserError

__all__ = ["Candidates", "TaskSpec", "TASKS", "OBJECTIVES", "WINOGRANDE_SCORINGS", "get_task", "resolve_objective",
           "task_names"]

ScoringMode = Literal["label_words", "option_suffix", "partial", "choices"]
Objective = Literal["classification", "lm"]
OBJECTIVES = ("classification", "lm")
# WinoGrande scoring variants (config ``winogrande_scoring``): ZO-Bench's (default) and lm-eval's.
WINOGRANDE_SCORINGS = {"zo-bench": "option_suffix", "partial": "partial"}


@dataclass(frozen=True)
class Candidates:
    """The scoring problem of one example: candidate ``k`` is ``contexts[k]`` followed by ``continuations[k]``.

    ``label`` is the index of the correct candidate (``None`` when the example is unlabelled).
    """

    contexts: tuple[str, ...]
    continuations: tuple[str, ...]
    label: int | None

    def __post_init__(self) -> None:
        if len(self.contexts) != len(self.continuations) or not self.contexts:
            raise ValueError("a Candidates needs as many contexts as continuations, and at least one")


@dataclass(frozen=True)
class TaskSpec:
    """One task: data location, fields, template, verbalizer and scoring.

    Attributes:
        name: the CLI name.
        hf_id, hf_config: the Hub data set (``datasets.load_dataset(hf_id, hf_config)``).
        train_split: Hub split sampled for train and dev.
        eval_split: Hub split sampled for evaluation (the labelled validation split: the test splits of
            GLUE/SuperGLUE/WinoGrande carry no labels).
        fields: input fields an example must have (besides ``label_field``).
        label_field: the field holding the gold answer.
        label_values: the raw label values in candidate order (``str`` form; ``"1"`` and ``1`` both match).
        scoring: ``"label_words"``, ``"partial"`` or ``"choices"`` (module docstring).
        verbalizer: continuation text per class for ``"label_words"`` tasks (empty otherwise).
        render_fn: ``(example, verbalizer) -> (contexts, continuations)``.
        text_fields: the fields holding free text (used by the bag-of-words checks and for display).
        objective: the training objective of the published protocol for this task (module docstring).
        notes: provenance of the template and split choice.
    """

    name: str
    hf_id: str
    hf_config: str | None
    train_split: str
    eval_split: str
    fields: tuple[str, ...]
    label_field: str
    label_values: tuple[str, ...]
    scoring: ScoringMode
    verbalizer: tuple[str, ...]
    render_fn: Callable[[dict, tuple[str, ...]], tuple[tuple[str, ...], tuple[str, ...]]]
    text_fields: tuple[str, ...]
    objective: Objective = "classification"
    notes: str = ""

    @property
    def required_fields(self) -> tuple[str, ...]:
        return self.fields + (self.label_field,)

    @property
    def num_candidates(self) -> int:
        return len(self.label_values)

    def label_index(self, example: dict) -> int | None:
        """Index of the gold candidate, or ``None`` for an unlabelled example (e.g. GLUE test label -1).

        Raises ``UserError`` for a label value outside ``label_values``.
        """
        raw = example.get(self.label_field)
        if raw is None:
            return None
        if isinstance(raw, bool):
            raw = int(raw)
        if isinstance(raw, float) and raw.is_integer():
            raw = int(raw)
        key = str(raw).strip()
        if key in ("-1", ""):
            return None
        if key not in self.label_values:
            raise UserError(
                f"task {self.name}: field {self.label_field!r} has value {raw!r}; expected one of "
                f"{', '.join(self.label_values)}"
            )
        return self.label_values.index(key)

    def render(self, example: dict) -> Candidates:
        """The example's candidates (contexts, continuations) and gold index."""
        contexts, continuations = self.render_fn(example, self.verbalizer)
        return Candidates(tuple(contexts), tuple(continuations), self.label_index(example))


def _shared(context: str, continuations: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    return (context,) * len(continuations), tuple(continuations)


def _sst2(ex: dict, verbalizer: tuple[str, ...]):
    # MeZO SST-2 template: "<sentence> It was terrible|great"
    return _shared(f"{str(ex['sentence']).strip()} It was", verbalizer)


def _wsc(ex: dict, verbalizer: tuple[str, ...]):
    # MeZO/PromptSource WSC yes-no question about whether the pronoun (span2) refers to span1.
    context = (
        f"{str(ex['text']).strip()}\nIn the previous sentence, does the pronoun \"{str(ex['span2_text']).lower()}\" "
        f"refer to {ex['span1_text']}? Yes or No?\n"
    )
    return _shared(context, verbalizer)


def _blank(ex: dict) -> tuple[str, str, tuple[str, str]]:
    sentence = str(ex["sentence"])
    if sentence.count("_") != 1:
        raise UserError(f"task winogrande: sentence must contain exactly one '_' blank, got {sentence!r}")
    blank = sentence.index("_")
    return sentence[:blank], sentence[blank + 1 :], (str(ex["option1"]), str(ex["option2"]))


def _winogrande_option_suffix(ex: dict, verbalizer: tuple[str, ...]):
    # ZO-Bench: context = the text before the blank; candidate = option + the rest of the sentence. As in its
    # encode_prompt, spaces are stripped from both ends of the prompt and of each filled sentence, so the space
    # before the blank starts the scored text (" option rest"), where a BPE tokenizer puts it.
    before, after, options = _blank(ex)
    context = before.strip(" ")
    wholes = [(before + option + after).strip(" ") for option in options]
    return (context,) * 2, tuple(whole[len(context):] for whole in wholes)


def _winogrande_partial(ex: dict, verbalizer: tuple[str, ...]):
    # lm-eval partial scoring: context = text before the blank + option; target = " " + the rest, stripped.
    before, after, options = _blank(ex)
    if after.strip():
        return tuple(before + option for option in options), (" " + after.strip(),) * 2
    # Blank at the very end: nothing shared to score, so the options themselves are the continuations.
    return (before.rstrip(),) * 2, tuple(" " + option for option in options)


def _rte(ex: dict, verbalizer: tuple[str, ...]):
    # MeZO RTE question template; label 0 = entailment -> "Yes".
    context = f"{str(ex['premise']).strip()}\nDoes this mean that \"{str(ex['hypothesis']).strip()}\" is true? Yes or No?\n"
    return _shared(context, verbalizer)


def _boolq(ex: dict, verbalizer: tuple[str, ...]):
    question = str(ex["question"]).strip().rstrip("?")
    context = f"{str(ex['passage']).strip()}\nQuestion: {question}?\nAnswer:"
    return _shared(context, verbalizer)


def _lower_first(text: str) -> str:
    """Sentence case to mid-sentence case ("The man left." -> "the man left."), leaving the pronoun "I" alone."""
    text = text.strip()
    if text == "I" or text.startswith(("I ", "I'")):
        return text
    return text[:1].lower() + text[1:]


def _copa(ex: dict, verbalizer: tuple[str, ...]):
    # MeZO COPA: premise without its final period, a connective, then each choice as the continuation.
    premise = str(ex["premise"]).strip().rstrip(".")
    connective = {"cause": "because", "effect": "so"}.get(str(ex["question"]).strip())
    if connective is None:
        raise UserError(f"task copa: field 'question' must be 'cause' or 'effect', got {ex['question']!r}")
    context = f"{premise} {connective}"
    return _shared(context, (" " + _lower_first(str(ex["choice1"])), " " + _lower_first(str(ex["choice2"]))))


TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        TaskSpec(
            name="sst2", hf_id="nyu-mll/glue", hf_config="sst2", train_split="train", eval_split="validation",
            fields=("sentence",), label_field="label", label_values=("0", "1"), scoring="label_words",
            verbalizer=(" terrible", " great"), render_fn=_sst2, text_fields=("sentence",),
            notes="GLUE SST-2; 67,349 train / 872 validation; test is unlabelled, so validation is the eval pool.",
        ),
        TaskSpec(
            name="wsc", hf_id="aps/super_glue", hf_config="wsc.fixed", train_split="train", eval_split="validation",
            fields=("text", "span1_index", "span2_index", "span1_text", "span2_text"), label_field="label",
            label_values=("0", "1"), scoring="label_words", verbalizer=("No", "Yes"), render_fn=_wsc,
            text_fields=("text", "span1_text", "span2_text"),
            notes="SuperGLUE wsc.fixed; 554 train / 104 validation. MeZO's recurring 63.5% is likely the "
            "validation majority class (see DATA.md): always read WSC accuracy beside the majority baseline.",
        ),
        TaskSpec(
            name="winogrande", hf_id="allenai/winogrande", hf_config="winogrande_m", train_split="train",
            eval_split="validation", fields=("sentence", "option1", "option2"), label_field="answer",
            label_values=("1", "2"), scoring="option_suffix", verbalizer=(), render_fn=_winogrande_option_suffix,
            text_fields=("sentence",), objective="lm",
            notes="winogrande_m (2,558 train) as in ZO-Bench's sweeps; validation (1,267, shared by all sizes) "
            "is the eval pool; the test split is unlabelled. Other sizes: pass hf_config, e.g. winogrande_xl. "
            "ZO-Bench scores option + suffix given the prefix and trains LM-style on the gold candidate.",
        ),
        TaskSpec(
            name="rte", hf_id="aps/super_glue", hf_config="rte", train_split="train", eval_split="validation",
            fields=("premise", "hypothesis"), label_field="label", label_values=("0", "1"), scoring="label_words",
            verbalizer=("Yes", "No"), render_fn=_rte, text_fields=("premise", "hypothesis"),
            notes="SuperGLUE RTE; label 0 = entailment.",
        ),
        TaskSpec(
            name="boolq", hf_id="aps/super_glue", hf_config="boolq", train_split="train", eval_split="validation",
            fields=("question", "passage"), label_field="label", label_values=("0", "1"), scoring="label_words",
            verbalizer=(" No", " Yes"), render_fn=_boolq, text_fields=("passage", "question"),
            notes="SuperGLUE BoolQ; label 1 = True.",
        ),
        TaskSpec(
            name="copa", hf_id="aps/super_glue", hf_config="copa", train_split="train", eval_split="validation",
            fields=("premise", "choice1", "choice2", "question"), label_field="label", label_values=("0", "1"),
            scoring="choices", verbalizer=(), render_fn=_copa, text_fields=("premise", "choice1", "choice2"),
            objective="lm", notes="SuperGLUE COPA; 400 train / 100 validation; MeZO trains it LM-style.",
        ),
    )
}


def task_names() -> tuple[str, ...]:
    return tuple(TASKS)


def get_task(name: str, winogrande_scoring: str = "zo-bench") -> TaskSpec:
    """The spec called ``name`` (case-insensitive; ``sst-2``/``wsc.fixed`` aliases), else ``UserError``.

    ``winogrande_scoring`` picks WinoGrande's candidates: ``"zo-bench"`` (default; option + suffix given the
    prefix) or ``"partial"`` (lm-eval: the suffix given prefix + option). Other tasks ignore it.
    """
    if winogrande_scoring not in WINOGRANDE_SCORINGS:
        raise UserError(f"unknown winogrande_scoring {winogrande_scoring!r}; choose one of: "
                        f"{', '.join(WINOGRANDE_SCORINGS)}")
    key = name.strip().lower().replace("-", "").replace("_", "")
    aliases = {"wscfixed": "wsc", "wsc.fixed": "wsc"}
    key = aliases.get(key, key)
    if key not in TASKS:
        raise UserError(f"unknown task {name!r}; choose one of: {', '.join(TASKS)}")
    spec = TASKS[key]
    if spec.name == "winogrande" and winogrande_scoring == "partial":
        spec = replace(spec, scoring="partial", render_fn=_winogrande_partial)
    return spec


def resolve_objective(spec: TaskSpec, objective: str) -> str:
    """``objective`` (``auto`` = the task's published default) as ``classification`` or ``lm``."""
    if objective == "auto":
        return spec.objective
    if objective not in OBJECTIVES:
        raise UserError(f"unknown objective {objective!r}; choose one of: auto, {', '.join(OBJECTIVES)}")
    return objective
