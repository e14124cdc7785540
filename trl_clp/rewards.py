"""Ready-made reward functions with TRL's signature (callables, ROUGE, NLI, any reward model as a named objective).

The maths that turns their per-objective rewards into one reward and advantages lives in `trl_clp.scalarization`.
"""

from __future__ import annotations

import copy
import functools
import importlib
import inspect

import torch

from .extras import require


def _completion_text(completion) -> str:
    # TRL passes strings for standard prompts and a list of messages for conversational ones.
    return completion if isinstance(completion, str) else completion[-1]["content"]


def _prompt_text(prompt) -> str:
    return prompt if isinstance(prompt, str) else " ".join(message["content"] for message in prompt)


def brevity_reward(completions, completion_ids, max_length: int | None = None, **kwargs) -> list[float]:
    """`1 − tokens / max_length` per completion: 1 for an empty answer, 0 at the length limit.

    `max_length` defaults to the longest completion in the batch; pass it with `functools.partial` to pin it
    to `max_completion_length` (scores are then comparable across batches).
    """
    lengths = [len(ids) for ids in completion_ids]
    limit = max_length or max(max(lengths), 1)
    return [1.0 - min(length, limit) / limit for length in lengths]


def source_coverage_reward(prompts, completions, **kwargs) -> list[float]:
    """Fraction of the distinct words of the prompt that the completion repeats, in [0, 1].

    A crude but real faithfulness/coverage proxy: it grows with how much of the source the answer covers, so it
    pulls against brevity.
    """
    scores = []
    for prompt, completion in zip(prompts, completions, strict=True):
        source_words = set(_prompt_text(prompt).lower().split())
        answer_words = set(_completion_text(completion).lower().split())
        scores.append(len(source_words & answer_words) / len(source_words) if source_words else 0.0)
    return scores


def _character_fraction(completions, predicate) -> list[float]:
    texts = [_completion_text(completion) for completion in completions]
    return [sum(map(predicate, text)) / len(text) if text else 0.0 for text in texts]


def lowercase_reward(completions, **kwargs) -> list[float]:
    """Fraction of the completion's characters that are lowercase letters (a calm, prose-like register)."""
    return _character_fraction(completions, str.islower)


def uppercase_reward(completions, **kwargs) -> list[float]:
    """Fraction of the completion's characters that are uppercase letters (an emphatic register)."""
    return _character_fraction(completions, str.isupper)


def titlecase_reward(completions, **kwargs) -> list[float]:
    """Fraction of the completion's words written in Title case ("River"), a third register."""
    scores = []
    for completion in completions:
        words = _completion_text(completion).split()
        scores.append(sum(w.istitle() and len(w) > 1 for w in words) / len(words) if words else 0.0)
    return scores


def _column(kwargs: dict, column: str, reward_name: str, expected: int) -> list:
    """A dataset column that TRL passed to the reward function, checked to be there."""
    if column not in kwargs:
        trl_arguments = ("prompts", "completion_ids", "trainer_state", "log_extra", "log_metric")
        available = sorted(k for k in kwargs if k not in trl_arguments)
        hint = (
            " TRL never passes a `completion` column to reward functions: rename it, e.g. "
            "`dataset.rename_column('completion', 'reference')`."
            if column == "completion"
            else ""
        )
        raise KeyError(
            f"Reward {reward_name!r} reads the dataset column {column!r}, which this batch does not have (columns "
            f"passed: {available}). Set its column argument to one of them, or add the column to the dataset.{hint}"
        )
    values = list(kwargs[column])
    if len(values) != expected:
        raise ValueError(f"Column {column!r} has {len(values)} values for {expected} completions.")
    return values


class RougeReward:
    """ROUGE F-measure of each completion against a reference column of the dataset, in [0, 1].

    TRL passes the dataset's columns other than `prompt` and `completion` to reward functions, so a column such as
    XSum's `summary` serves as the reference; rename a `completion` column (trl-lib/tldr's reference) first.

    ```python
    rouge = RougeReward(reference_column="summary", rouge_type="rougeL")
    rouge(prompts=["..."], completions=["the cat sat"], summary=["the cat sat on the mat"])  # [0.667]
    ```

    Args:
        reference_column: the dataset column holding the reference text.
        rouge_type: `"rouge1"`, `"rouge2"` or `"rougeL"` (longest common subsequence).
        use_stemmer: Porter-stem words before matching (as in the usual summarisation evaluations).
    """

    def __init__(self, reference_column: str = "reference", rouge_type: str = "rougeL", use_stemmer: bool = True):
        rouge_scorer = require("rouge_score.rouge_scorer", "rewards", "the ROUGE rewards")
        if rouge_type not in ("rouge1", "rouge2", "rougeL", "rougeLsum"):
            raise ValueError(f"`rouge_type` must be rouge1, rouge2, rougeL or rougeLsum, got {rouge_type!r}.")
        self.reference_column = reference_column
        self.rouge_type = rouge_type
        self.scorer = rouge_scorer.RougeScorer([rouge_type], use_stemmer=use_stemmer)
        self.__name__ = rouge_type

    def __call__(self, completions, **kwargs) -> list[float]:
        references = _column(kwargs, self.reference_column, self.__name__, len(completions))
        return [
            self.scorer.score(str(reference), _completion_text(completion))[self.rouge_type].fmeasure
            for reference, completion in zip(references, completions, strict=True)
        ]


def _inference_device_and_dtype(device, dtype):
    """This process's accelerator (one GPU per rank under `accelerate launch`) and half precision on a GPU."""
    from accelerate import PartialState

    device = torch.device(device) if device is not None else PartialState().device
    if dtype is None and device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return device, dtype or torch.float32


class _SequenceClassifierReward:
    """A sequence-classification model scoring texts in batches: eval mode, no gradients, on the right device."""

    def __init__(self, model, tokenizer=None, device=None, dtype=None, batch_size: int = 16, max_length: int = 512):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        device, dtype = _inference_device_and_dtype(device, dtype)
        if tokenizer is not None:
            # Our own copy: the padding and truncation settings below must not change the caller's tokenizer, which
            # is often the policy's own (`processing_class`).
            tokenizer = copy.deepcopy(tokenizer)
        elif isinstance(model, str):
            tokenizer = AutoTokenizer.from_pretrained(model)
        else:
            raise ValueError("Pass the reward model's `tokenizer=` along with a model instance.")
        if isinstance(model, str):
            model = AutoModelForSequenceClassification.from_pretrained(model, dtype=dtype)
        self.model = model.to(device).eval()
        self.model.requires_grad_(False)
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.max_length = max_length
        if self.tokenizer.pad_token is None:  # decoder reward models often ship without one
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        # Tokenizers may return inputs the model does not take (token_type_ids for a decoder reward model).
        self.forward_inputs = set(inspect.signature(self.model.forward).parameters)

    @torch.inference_mode()
    def _logits(self, texts: list[str], text_pairs: list[str] | None = None, truncation=True) -> torch.Tensor:
        """`(N, num_labels)` float32 logits for N texts (or text pairs), `batch_size` at a time."""
        outputs = []
        for start in range(0, len(texts), self.batch_size):
            end = start + self.batch_size
            encoded = self.tokenizer(
                texts[start:end],
                None if text_pairs is None else text_pairs[start:end],
                return_tensors="pt",
                padding=True,
                truncation=truncation,
                max_length=self.max_length,
            ).to(self.model.device)
            encoded = {key: value for key, value in encoded.items() if key in self.forward_inputs}
            outputs.append(self.model(**encoded).logits.float().cpu())
        return torch.cat(outputs)


class NLIReward(_SequenceClassifierReward):
    """Probability that the source entails the completion, under an NLI model: a faithfulness reward.

    The premise is the prompt (or a dataset column such as `document`), the hypothesis the completion. Any
    sequence-classification model id or path with an "entailment" label works (e.g. a DeBERTa or RoBERTa MNLI model).

    Args:
        model: model id, local path or a loaded `AutoModelForSequenceClassification`.
        premise_column: dataset column holding the source; None uses the prompt.
        entailment_label: the label's name or index; by default the label whose name starts with "entail".
        device: default: this process's accelerator device.
        dtype: for a model id or path: default bfloat16 (or float16) on a GPU, float32 on a CPU. A loaded model keeps
            its dtype.
        batch_size, max_length: premise-hypothesis pairs per forward pass, and their token limit (the premise is
            truncated first).
    """

    def __init__(
        self,
        model,
        tokenizer=None,
        premise_column: str | None = None,
        entailment_label: str | int | None = None,
        device=None,
        dtype=None,
        batch_size: int = 16,
        max_length: int = 512,
    ):
        super().__init__(model, tokenizer, device, dtype, batch_size, max_length)
        self.premise_column = premise_column
        labels = {name.lower(): index for name, index in self.model.config.label2id.items()}
        if isinstance(entailment_label, int):
            self.entailment_index = entailment_label
        elif entailment_label is not None:
            if entailment_label not in self.model.config.label2id:
                raise ValueError(f"`entailment_label={entailment_label!r}` is not among {self.model.config.label2id}.")
            self.entailment_index = self.model.config.label2id[entailment_label]
        else:
            matches = [index for name, index in labels.items() if name.startswith("entail")]
            if len(matches) != 1:
                raise ValueError(
                    f"Cannot tell which label of the NLI model means entailment (labels: {self.model.config.id2label}): "
                    "pass `entailment_label=` with its name or index."
                )
            self.entailment_index = matches[0]
        self.__name__ = "nli"

    def __call__(self, prompts, completions, **kwargs) -> list[float]:
        if self.premise_column is None:
            premises = [_prompt_text(prompt) for prompt in prompts]
        else:
            premises = [str(text) for text in _column(kwargs, self.premise_column, self.__name__, len(completions))]
        hypotheses = [_completion_text(completion) for completion in completions]
        # Truncate the source, never the completion being judged.
        logits = self._logits(premises, hypotheses, truncation="only_first")
        return logits.softmax(dim=-1)[:, self.entailment_index].tolist()


class RewardModelObjective(_SequenceClassifierReward):
    """Any reward model (a sequence classifier with one output) as a named objective with TRL's signature.

    Unlike passing the model id to TRL directly, the objective gets the name you choose, its own tokenizer and
    chat template, batching, eval mode and half precision on a GPU, and it can be mixed freely with callables.

    Args:
        model: model id, local path or a loaded `AutoModelForSequenceClassification` with `num_labels=1`.
        name: the objective's name (metrics, `clp_config.json`, the weighting's order).
        tokenizer: required with a model instance; loaded from the id or path otherwise. The objective works on its
            own copy (padded, truncated from the left to keep the end of the answer): yours is left unchanged.
        device, dtype, batch_size, max_length: as for `NLIReward`; texts longer than `max_length` tokens lose their
            beginning.
    """

    def __init__(self, model, name: str, tokenizer=None, device=None, dtype=None, batch_size=16, max_length=1024):
        super().__init__(model, tokenizer, device, dtype, batch_size, max_length)
        if self.model.config.num_labels != 1:
            raise ValueError(
                f"A reward model scores with one output, but this one has num_labels={self.model.config.num_labels}; "
                "for a classifier use e.g. `NLIReward`, or wrap it in your own function."
            )
        self.tokenizer.truncation_side = "left"  # keep the end of the answer, which the model scores
        self.__name__ = name

    def __call__(self, prompts, completions, **kwargs) -> list[float]:
        if isinstance(prompts[0], str):
            texts = [prompt + completion for prompt, completion in zip(prompts, completions, strict=True)]
        else:
            texts = [
                self.tokenizer.apply_chat_template(prompt + completion, tokenize=False)
                for prompt, completion in zip(prompts, completions, strict=True)
            ]
        return self._logits(texts)[:, 0].tolist()


def _has_words(text: str) -> bool:
    return any(character.isalnum() for character in text)


def sentiment_reward(completions, **kwargs) -> list[float]:
    """Positivity of each completion: VADER's compound sentiment score mapped to [0, 1] (`(compound + 1) / 2`).

    0.5 is neutral. VADER (`vaderSentiment`, its lexicon shipped in the package) reads English only. A completion with
    no word scores 0: an empty answer must not look neutral-to-good. Needs `pip install "trl-clp[text-rewards]"`.
    """
    analyzer = _vader_analyzer()
    texts = [_completion_text(completion) for completion in completions]
    return [(analyzer.polarity_scores(text)["compound"] + 1.0) / 2.0 if _has_words(text) else 0.0 for text in texts]


@functools.cache
def _vader_analyzer():
    # Reading the lexicon takes ~0.1 s: once per process, not per batch.
    return require(
        "vaderSentiment.vaderSentiment", "text-rewards", "the `sentiment` reward"
    ).SentimentIntensityAnalyzer()


def objectivity_reward(completions, **kwargs) -> list[float]:
    """Objectivity of each completion: `1 − subjectivity` under TextBlob's pattern lexicon, in [0, 1].

    Text without opinion words (facts, numbers, and also an echo of the question or text TextBlob cannot read, such as
    another language) scores 1: pair this reward with a KL weight that keeps the policy near the base model, and
    check samples (see docs/real_models.md). A completion with no word scores 0. Needs
    `pip install "trl-clp[text-rewards]"`.
    """
    textblob = require("textblob", "text-rewards", "the `objectivity` reward")
    texts = [_completion_text(completion) for completion in completions]
    return [1.0 - textblob.TextBlob(text).sentiment.subjectivity if _has_words(text) else 0.0 for text in texts]


def readability_reward(completions, **kwargs) -> list[float]:
    """Readability of each completion: textstat's Flesch reading ease, clipped to [0, 100] and divided by 100.

    Higher means shorter sentences and shorter words (90–100: very easy, 0–30: very hard). textstat counts syllables
    with NLTK's CMU dictionary, which it downloads at first use; offline that download fails, so syllables are
    counted with the hyphenation dictionary textstat ships (pyphen), its own fallback for words the CMU dictionary
    lacks. A completion with no word scores 0. Needs `pip install "trl-clp[text-rewards]"`.
    """
    from unittest import mock

    textstat = require("textstat", "text-rewards", "the `readability` reward")
    from textstat.backend.counts import _count_syllables

    texts = [_completion_text(completion) for completion in completions]
    # textstat looks the CMU dictionary up per call; with none, every word goes to its pyphen fallback.
    with mock.patch.object(_count_syllables, "get_cmudict", lambda lang: None):
        scores = [textstat.flesch_reading_ease(text) if _has_words(text) else 0.0 for text in texts]
    return [min(max(score, 0.0), 100.0) / 100.0 for score in scores]


def descriptiveness_reward(completions, **kwargs) -> list[float]:
    """Descriptiveness of each completion: its distinct adjectives per word, in [0, 1].

    Words and adjectives (tags JJ, JJR, JJS) come from TextBlob's pattern tagger (`PatternTagger`: the Brill lexicon
    and rules shipped with textblob, so it runs offline, without NLTK's data); a word is a token with a letter or
    digit. An adjective repeated counts once, so that "great great great" is not more descriptive than "great". On
    SmolLM2-135M-Instruct's own answers it pulls against `readability` (adjectives are long words): Pearson r = −0.40
    over 288 samples. Short adjectives in a list ("Big, red, soft.") score high on both: pair the two with a KL
    weight and read samples. A completion with no word scores 0. Needs `pip install "trl-clp[text-rewards]"`.
    """
    tagger = _pattern_tagger()
    scores = []
    for completion in completions:
        tagged = [(word.lower(), tag) for word, tag in tagger.tag(_completion_text(completion)) if _has_words(word)]
        adjectives = {word for word, tag in tagged if tag.startswith("JJ")}
        scores.append(len(adjectives) / len(tagged) if tagged else 0.0)
    return scores


@functools.cache
def _pattern_tagger():
    return require("textblob.en.taggers", "text-rewards", "the `descriptiveness` reward").PatternTagger()


BUILTIN_REWARDS = {
    "lowercase": lowercase_reward,
    "uppercase": uppercase_reward,
    "titlecase": titlecase_reward,
    "brevity": brevity_reward,
    "source_coverage": source_coverage_reward,
    "sentiment": sentiment_reward,
    "objectivity": objectivity_reward,
    "readability": readability_reward,
    "descriptiveness": descriptiveness_reward,
}


def resolve_reward_function(
    spec: str, reference_column: str = "reference", nli_model: str | None = None, premise_column: str | None = None
):
    """A reward function from a command-line spec.

    Args:
        spec: a built-in name (`lowercase`, `uppercase`, `titlecase`, `brevity`, `source_coverage`; the text scorers
            `sentiment`, `objectivity`, `readability`, `descriptiveness`, `civility`), `rouge1`,
            `rouge2` or `rougeL` (against `reference_column`), `nli` (entailment of the completion by the prompt, or
            by `premise_column`, under `nli_model`), a `module:function` import path, or anything else, returned
            unchanged for TRL to load as a reward-model id or path.
        reference_column: the dataset column with the reference text, for the ROUGE rewards.
        nli_model: id or path of the NLI model, for `nli`.
        premise_column: dataset column holding the source for `nli` (default: the prompt).
    """
    if spec in BUILTIN_REWARDS:
        return BUILTIN_REWARDS[spec]
    if spec == "civility":
        return civility_reward
    if spec in ("rouge1", "rouge2", "rougeL", "rougeLsum"):
        return RougeReward(reference_column=reference_column, rouge_type=spec)
    if spec == "nli":
        if nli_model is None:
            raise ValueError("The `nli` reward needs an NLI model: pass its id or path as `nli_model`.")
        return NLIReward(nli_model, premise_column=premise_column)
    if ":" in spec:
        module_name, function_name = spec.split(":", 1)
        return getattr(importlib.import_module(module_name), function_name)
    return spec


def civility_reward(completions, **kwargs) -> list[float]:
    """`1 − P(offensive)` per completion, in [0, 1], from alt-profanity-check's classifier: 1 for civil text.

    A linear classifier over word n-grams (shipped with the package, offline, about 0.1 ms per text) trained on
    offensive-language data: it scores wording, not intent, so a policy can raise it by avoiding words as well as by
    being civil. Pair it with a KL weight or a fluency objective. All completions are scored in one batched call.

    Needs `pip install "trl-clp[civility]"`. alt-profanity-check pins scikit-learn and joblib to exact versions:
    install it where nothing else needs other versions of them.
    """
    profanity_check = require("profanity_check", "civility", "the civility reward")
    texts = [_completion_text(completion) for completion in completions]
    return [1.0 - float(p) for p in profanity_check.predict_prob(texts)]
