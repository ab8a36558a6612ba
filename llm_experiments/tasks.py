r"""One table of task specifications: where the data lives, which fields it has, how it is prompted and scored.

Every task reduces to the same scoring problem (see DATA.md): an example becomes a :class:`Candidates`, a tuple
of ``(context, continuation)`` text pairs plus the index of the correct one. The model's score of candidate
``k`` is its mean per-token log-probability of ``continuation_k`` given ``context_k``
(:mod:`llm_experiments.evaluation`); the prediction is the argmax. Three scoring modes fill the pairs in:

* ``"label_words"`` (classification; MeZO ``large_models/templates.py`` convention, LLM-NOTES §2.1): one
  shared prompt as context, one verbalizer word per class as continuation.
* ``"partial"`` (WinoGrande; lm-eval ``partial_context``/``partial_target``, LLM-NOTES §2.4/§4): the text
  before the blank with option ``k`` substituted is context ``k``; the text after the blank is the shared
  continuation, so both options are judged on the *same* tokens.
* ``"choices"`` (COPA): one shared context, each answer choice is a continuation.

Training (``llm_experiments.data.encode_for_training``) uses the correct pair with the loss on its continuation
tokens only. This module imports nothing heavy.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

from .errors import UserError

__all__ = ["Candidates", "TaskSpec", "TASKS", "get_task", "task_names"]

ScoringMode = Literal["label_words", "partial", "choices"]


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


def _winogrande(ex: dict, verbalizer: tuple[str, ...]):
    # Partial scoring: substitute each option for the blank and score the shared text after it.
    sentence = str(ex["sentence"])
    if sentence.count("_") != 1:
        raise UserError(f"task winogrande: sentence must contain exactly one '_' blank, got {sentence!r}")
    blank = sentence.index("_")
    before, after = sentence[:blank], sentence[blank + 1 :]
    options = (str(ex["option1"]), str(ex["option2"]))
    if after.strip():
        return tuple(before + option for option in options), (after, after)
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
            "validation majority class (LLM-NOTES §4): always read WSC accuracy beside the majority baseline.",
        ),
        TaskSpec(
            name="winogrande", hf_id="allenai/winogrande", hf_config="winogrande_m", train_split="train",
            eval_split="validation", fields=("sentence", "option1", "option2"), label_field="answer",
            label_values=("1", "2"), scoring="partial", verbalizer=(), render_fn=_winogrande,
            text_fields=("sentence",),
            notes="winogrande_m (2,558 train) as in ZO-Bench's sweeps; validation (1,267, shared by all sizes) "
            "is the eval pool; the test split is unlabelled. Other sizes: pass hf_config, e.g. winogrande_xl.",
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
            notes="SuperGLUE COPA; 400 train / 100 validation.",
        ),
    )
}


def task_names() -> tuple[str, ...]:
    return tuple(TASKS)


def get_task(name: str) -> TaskSpec:
    """The spec called ``name`` (case-insensitive; ``sst-2``/``wsc.fixed`` aliases), else ``UserError``."""
    key = name.strip().lower().replace("-", "").replace("_", "")
    aliases = {"wscfixed": "wsc", "wsc.fixed": "wsc"}
    key = aliases.get(key, key)
    if key not in TASKS:
        raise UserError(f"unknown task {name!r}; choose one of: {', '.join(TASKS)}")
    return TASKS[key]
