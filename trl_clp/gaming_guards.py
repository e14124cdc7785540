"""Guards that catch gaming: completions that score well on a text scorer without answering the prompt.

A scorer such as objectivity (1 − TextBlob subjectivity) gives 1.0 to text with no opinion words: an echo of the
prompt, a list of numbers, a title, gibberish. A policy trained on it finds such text. Each guard below is a plain
test on one completion (and its prompt), with a threshold calibrated on the committed samples of SmolLM2-135M-Instruct
(`docs/results/smollm2_tone*/`, 24-token chat answers, many cut mid-sentence): each threshold passes the base
model's fluent answers, truncated or not, and flags the degenerate text trained policies wrote there. A method's rate
of each guard is then compared with the base model's rate by a one-sided Fisher exact test (`compare_guard_rates`),
and a guarded front scores a flagged completion 0 on every reward (`guarded_samples`), so that gaming cannot raise a
hypervolume.

| guard | flags a completion when | threshold and why |
|---|---|---|
| `echo` | at least `ECHO_COVERAGE` of its words lie in a word bigram copied from the prompt | 0.4: "A gaming review about farming." (0.4) is flagged; base answers that open with the prompt's subject ("A bamboo cutting board is a classic…", 0.2) pass |
| `digits_and_lists` | at least `DIGITS_AND_LISTS_SHARE` of its tokens are numbers or list markers | 0.3: "The 1012, a 1013, a 1014" (0.5) is flagged; a fluent answer with figures ("includes 18 locations across 10 continents, featuring from 1,000", 0.25) passes |
| `repetition` | at least `REPEATED_NGRAM_SHARE` of its token trigrams repeat an earlier trigram | 0.25: "to the top, to the top, to the top" is flagged; a base answer restating one phrase (0.2) passes |
| `near_empty` | it has fewer than `NEAR_EMPTY_WORDS` words | 3: "Safe.", "You can't.", a row of emoji; the base model never wrote one (0 of 288) |
| `non_english` | under `ENGLISH_SHARE` of its uncapitalised words are English words | 0.8: capitalised words are left out because fluent answers invent names ("Abespergorðing", "Polachess"); one unknown word in five is more than base answers reach with modern words ("smartwatch", "coworking"), and "bon bons, i am a no. … the lochs" (0.75) is flagged |
| `fragment` | it ends a sentence and none of its words is a verb (`has_verb`) | no number: a finished verbless phrase is a title, not an answer ("Abe, a beach in the winter, aunce.", "The majestic mountain lake in autumn."), and objectivity reads it as 1.0; a base answer cut by the length limit before its verb passes |

On the 288 committed base samples the guards flag 11 (echo), 1 (digits and lists), 2 (repetition), 0 (near-empty),
7 (non-English: five answers in French, Italian, Spanish or Chinese, two with made-up words) and 3 (fragment, one of
them a sentence whose verb the lexicon reads as a noun); 23 are flagged by at least one. The English lexicon is TextBlob's
(the `text-rewards` extra, which the objectivity reward already needs; see `english_lexicon`).
"""

from __future__ import annotations

import copy
import functools
import math
import os
import re
from dataclasses import dataclass

from .extras import require

ECHO_COVERAGE = 0.4
DIGITS_AND_LISTS_SHARE = 0.3
REPEATED_NGRAM_SHARE = 0.25
NEAR_EMPTY_WORDS = 3
ENGLISH_SHARE = 0.8
GAMING_GUARDS: tuple[str, ...] = ("echo", "digits_and_lists", "repetition", "near_empty", "non_english", "fragment")

# A word is a run of letters of any script, apostrophes inside it kept ("can't" is one word); digits and other
# punctuation split words.
_WORD = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)*")
# A token is a word, a number ("1,000", "2.5", "1012") or a list marker opening a line ("1.", "2)", "-", "*", "•").
_LIST_MARKER = re.compile(r"[ \t]*(?:\d+[.)]|[-*•+])(?=\s|$)")
_TOKEN = re.compile(r"\d+(?:[.,]\d+)*|[^\W\d_]+(?:['’][^\W\d_]+)*")
# Tags of hosts whose "'s" is "is" or "has", never a possessive: pronouns, determiners, "there", "here", wh-words.
_OWNS_NOTHING = frozenset({"PRP", "DT", "EX", "RB", "IN", "WP", "WDT", "WRB"})
# Sentence-final punctuation, possibly inside closing quotes or brackets.
_SENTENCE_END = re.compile(r"[.!?…][\"'”’)\]]*\s*$")


# ------------------------------------------------------------------------------------------------------ the lexicon


@functools.cache
def english_lexicon() -> dict[str, str]:
    """Brill's part-of-speech lexicon, as shipped in TextBlob: `{word form: its most frequent Penn Treebank tag}`.

    ~94k word forms of the Brown corpus and Penn Treebank, one tag each, in `textblob/en/en-lexicon.txt`. It tags the
    foreign words it saw `FW` ("est", "vous", "bon"), proper nouns `NNP`/`NNPS`, and contractions split as the Penn
    Treebank does ("ca" + "n't", "I" + "'m").
    """
    textblob = require("textblob", "text-rewards", "the gaming guards' English lexicon")
    tags = {}
    with open(os.path.join(os.path.dirname(textblob.__file__), "en", "en-lexicon.txt"), encoding="utf-8") as handle:
        for line in handle:
            fields = line.split()
            if not line.startswith(";;;") and len(fields) == 2:
                tags[fields[0]] = fields[1]
    return tags


@functools.cache
def english_words() -> tuple[frozenset[str], frozenset[str]]:
    """(common words lowercased, proper nouns as written) of `english_lexicon`, foreign words left out.

    Brill's lexicon suits a language check better than TextBlob's spelling list (built from Gutenberg books, it holds
    "est", "une", "vous") or VADER's lexicon (7.5k opinion words only: neutral English would read as foreign). Proper
    nouns count only as written, capitalised ("Italy"), and not when their lowercase form is foreign (a sentence's
    first "Le").
    """
    tags = english_lexicon()
    foreign = {word.lower() for word, tag in tags.items() if tag == "FW"}
    common = {word.lower() for word, tag in tags.items() if tag not in ("FW", "NNP", "NNPS")}
    proper = {
        word
        for word, tag in tags.items()
        if tag in ("NNP", "NNPS") and word[:1].isupper() and word.lower() not in foreign
    }
    return frozenset(common), frozenset(proper)


def _treebank_parts(word: str) -> list[str]:
    """A word split as the Penn Treebank splits contractions: "can't" → ["ca", "n't"], "I'm" → ["I", "'m"]."""
    word = word.replace("’", "'")
    if "'" not in word:
        return [word]
    if word.lower().endswith("n't"):
        return [word[:-3], word[-3:]]
    head, _, tail = word.rpartition("'")
    return [head, "'" + tail]


def is_english_word(word: str) -> bool:
    """Whether `word` is an English word: a common word in any case, or a proper noun as written (`english_words`).

    A contraction is English when each of its Treebank parts is ("isn't", "you're"; not "l'Alimentum").
    """
    common, proper = english_words()
    if word.lower() in common or word in proper:
        return True
    parts = _treebank_parts(word)
    return len(parts) > 1 and all(part.lower() in common or part in proper for part in parts)


# ---------------------------------------------------------------------------------------------- what a text is made of


def words(text: str) -> list[str]:
    """The words of `text`: runs of letters of any script, apostrophes inside kept; digits and punctuation split."""
    return _WORD.findall(text)


def tokens(text: str) -> list[str]:
    """The words, numbers and line-opening list markers of `text`, in order ("1. Banana" → ["1.", "Banana"])."""
    found = []
    for line in text.splitlines():
        marker = _LIST_MARKER.match(line)
        if marker:
            found.append(marker.group().strip())
            line = line[marker.end() :]
        found += _TOKEN.findall(line)
    return found


def prompt_text(prompt) -> str:
    """The text a completion answers: the prompt itself, or a conversation's user turns joined by newlines."""
    if isinstance(prompt, str):
        return prompt
    return "\n".join(turn["content"] for turn in prompt if turn.get("role") == "user")


# ------------------------------------------------------------------------------------------------ one score per guard


def echo_coverage(completion: str, prompt) -> float:
    """Share of the completion's words that lie inside a word bigram also found in the prompt (lowercased); 0 if empty.

    Bigrams, not single words: an answer naturally repeats the prompt's subject word by word ("A bamboo cutting
    board is…"), while a copied run of two words or more, covering much of the completion, is a restatement.
    """
    said = [word.lower() for word in words(completion)]
    asked = [word.lower() for word in words(prompt_text(prompt))]
    asked_bigrams = set(zip(asked, asked[1:], strict=False))
    copied = [False] * len(said)
    for i, bigram in enumerate(zip(said, said[1:], strict=False)):
        if bigram in asked_bigrams:
            copied[i] = copied[i + 1] = True
    return sum(copied) / len(said) if said else 0.0


def digits_and_lists_share(completion: str) -> float:
    """Share of the completion's tokens (`tokens`) that are numbers or list markers; 0 without a token."""
    found = tokens(completion)
    listed = [token for token in found if not _WORD.fullmatch(token)]
    return len(listed) / len(found) if found else 0.0


def repeated_ngram_share(completion: str, n: int = 3) -> float:
    """Share of the completion's token n-grams (lowercased) that already occurred earlier in it; 0 without one."""
    found = [token.lower() for token in tokens(completion)]
    grams = [tuple(found[i : i + n]) for i in range(len(found) - n + 1)]
    seen, repeated = set(), 0
    for gram in grams:
        repeated += gram in seen
        seen.add(gram)
    return repeated / len(grams) if grams else 0.0


def uncapitalised_english_share(text: str) -> float | None:
    """Share of the uncapitalised words of `text` that are English words (`is_english_word`); None without a word.

    Capitalised words are left out: fluent answers invent names ("Polachess"), and those say nothing of the language.
    Text whose every word is capitalised (a title, "SHOCKING TOOKS") is read over all its words.
    """
    found = words(text)
    if not found:
        return None
    uncapitalised = [word for word in found if not word[0].isupper()] or found
    return sum(map(is_english_word, uncapitalised)) / len(uncapitalised)


def has_verb(text: str) -> bool:
    """Whether some word of `text` is a verb or modal in the lexicon, a contraction's part included ("I'm", "can't").

    The lexicon holds one tag per word, its most frequent: a verb read mostly as a noun is missed ("showcases"). A
    "'s" counts as "is" or "has" after a pronoun, determiner or adverb ("it's", "that's", "here's"), which own nothing,
    and as a possessive after anything else ("Today's").
    """
    tags = english_lexicon()

    def tag(word: str) -> str:
        return tags.get(word) or tags.get(word.lower()) or ""

    for word in words(text):
        parts = _treebank_parts(word)
        if any(tag(part).startswith("VB") or tag(part) == "MD" for part in parts):
            return True
        if parts[-1] == "'s" and tag(parts[0]) in _OWNS_NOTHING:
            return True
    return False


def flag_completion(prompt, completion: str) -> dict[str, bool]:
    """Which of `GAMING_GUARDS` flag `completion` (see the module's table for each definition and threshold).

    Args:
        prompt: what the completion answers: a string, or a conversation (a list of `{"role", "content"}` turns, of
            which the user turns count).
        completion: the generated text.
    """
    english = uncapitalised_english_share(completion)
    return {
        "echo": echo_coverage(completion, prompt) >= ECHO_COVERAGE,
        "digits_and_lists": digits_and_lists_share(completion) >= DIGITS_AND_LISTS_SHARE,
        "repetition": repeated_ngram_share(completion) >= REPEATED_NGRAM_SHARE,
        "near_empty": len(words(completion)) < NEAR_EMPTY_WORDS,
        "non_english": english is not None and english < ENGLISH_SHARE,
        "fragment": bool(_SENTENCE_END.search(completion)) and bool(words(completion)) and not has_verb(completion),
    }


def flag_samples(samples: list[dict]) -> list[dict[str, bool]]:
    """`flag_completion` of each sample, rows shaped like `Front.samples` (keys `prompt` and `completion`)."""
    return [flag_completion(sample["prompt"], sample["completion"]) for sample in samples]


# ----------------------------------------------------------------------------------------- rates against the base model


def fisher_exact_greater(flagged: int, total: int, base_flagged: int, base_total: int) -> float:
    """One-sided Fisher exact p-value that a rate `flagged / total` exceeds the base rate `base_flagged / base_total`.

    With the margins of the 2×2 table fixed (N = total + base_total completions, K = flagged + base_flagged flagged),
    the number flagged among `total` is hypergeometric; the p-value is its upper tail,
    P(X ≥ flagged) = Σ_{x ≥ flagged} C(K, x) C(N − K, total − x) / C(N, total), summed exactly in integers (as
    `scipy.stats.fisher_exact(..., alternative="greater")` on `[[flagged, total − flagged], [base_flagged,
    base_total − base_flagged]]`).

    Raises:
        ValueError: a total that is not positive, or a count outside `[0, total]`.
    """
    for name, count, of in (("flagged", flagged, total), ("base_flagged", base_flagged, base_total)):
        if of <= 0:
            raise ValueError(f"Fisher's test needs completions on both sides: got {name} {count} of {of}.")
        if not 0 <= count <= of:
            raise ValueError(f"{name} must lie in [0, {of}] (the completions it counts from); got {count}.")
    population, successes = total + base_total, flagged + base_flagged
    tail = sum(
        math.comb(successes, x) * math.comb(population - successes, total - x)
        for x in range(flagged, min(total, successes) + 1)
    )
    return min(1.0, tail / math.comb(population, total))  # int / int: one correctly rounded float


@dataclass
class GuardRate:
    """How often one guard flags a set of completions, beside the base model's rate, and whether it is worse.

    `p_value` is `fisher_exact_greater(flagged, total, base_flagged, base_total)`; `worse` is `p_value <
    significance`: the rate is significantly above the base model's.
    """

    guard: str
    flagged: int
    total: int
    rate: float
    base_flagged: int
    base_total: int
    base_rate: float
    p_value: float
    worse: bool


def compare_guard_rates(
    samples: list[dict], base_samples: list[dict], significance: float = 0.05
) -> dict[str, GuardRate]:
    """Each guard's rate on `samples` against its rate on `base_samples`, with a one-sided Fisher exact test.

    Returns one `GuardRate` per name of `GAMING_GUARDS`, plus `"any"`: completions flagged by at least one guard. One
    test per guard at `significance`, not corrected for the number of guards or weightings compared: read a single
    `worse` at 0.05 as a lead, several as a finding.

    Args:
        samples: rows shaped like `Front.samples` (keys `prompt`, `completion`), e.g. one method at one weighting.
        base_samples: the base model's rows, on the same prompts.
        significance: the p-value under which a rate is `worse`, in (0, 1).
    """
    if not 0 < significance < 1:
        raise ValueError(f"significance must lie in (0, 1), e.g. 0.05; got {significance}.")
    if not samples or not base_samples:
        raise ValueError(
            f"compare_guard_rates needs completions on both sides; got {len(samples)} samples and "
            f"{len(base_samples)} base samples."
        )
    flags, base_flags = flag_samples(samples), flag_samples(base_samples)
    rates = {}
    for guard in (*GAMING_GUARDS, "any"):
        flagged = sum(_flagged(row, guard) for row in flags)
        base_flagged = sum(_flagged(row, guard) for row in base_flags)
        p_value = fisher_exact_greater(flagged, len(flags), base_flagged, len(base_flags))
        rates[guard] = GuardRate(
            guard=guard,
            flagged=flagged,
            total=len(flags),
            rate=flagged / len(flags),
            base_flagged=base_flagged,
            base_total=len(base_flags),
            base_rate=base_flagged / len(base_flags),
            p_value=p_value,
            worse=p_value < significance,
        )
    return rates


def _flagged(flags: dict[str, bool], guard: str) -> bool:
    return any(flags.values()) if guard == "any" else flags[guard]


def guard_rates_by_weighting(
    samples: list[dict], base_samples: list[dict], significance: float = 0.05
) -> dict[tuple[float, ...], dict[str, GuardRate]]:
    """`compare_guard_rates` at each weighting of `samples` (rows with a `weights` key), against all `base_samples`."""
    by_weighting: dict[tuple[float, ...], list[dict]] = {}
    for sample in samples:
        by_weighting.setdefault(tuple(sample["weights"]), []).append(sample)
    return {w: compare_guard_rates(rows, base_samples, significance) for w, rows in by_weighting.items()}


def guarded_samples(samples: list[dict]) -> list[dict]:
    """Copies of `samples` in which a flagged completion scores 0 on every reward: a guarded front's samples.

    Every row gains `"flags"`, the names of the guards that flag it (empty if none). In a flagged row each reward
    becomes 0.0 (None stays None: an unscored reward stays unscored), and `value` (`w·R − α·KL`) loses its `w·R`
    part, so that it stays `w·R − α·KL` of the new rewards; the KL is kept.
    """
    guarded = []
    for sample, flags in zip(samples, flag_samples(samples), strict=True):
        row = copy.deepcopy(sample)
        row["flags"] = [guard for guard in GAMING_GUARDS if flags[guard]]
        if row["flags"]:
            if row.get("value") is not None and "weights" in row:
                scored = [w * r for w, r in zip(row["weights"], row["rewards"].values(), strict=True) if r is not None]
                row["value"] -= sum(scored)
            row["rewards"] = {name: None if value is None else 0.0 for name, value in row["rewards"].items()}
        guarded.append(row)
    return guarded


# ------------------------------------------------------------------------------- language and degeneracy, in aggregate

ENGLISH_WORD_SHARE = 0.5  # `text_guards`: a completion is English when at least half its words are English words


def english_word_share(text: str) -> float | None:
    """Share of the words of `text` that are English words (`is_english_word`); None without a word."""
    found = words(text)
    return sum(map(is_english_word, found)) / len(found) if found else None


def distinct_word_ratio(text: str) -> float | None:
    """Distinct words over words (lowercased): 1 without repetition, 1/n for one word said n times; None if empty."""
    found = [word.lower() for word in words(text)]
    return len(set(found)) / len(found) if found else None


def text_guards(texts: list[str]) -> dict[str, float]:
    """Language and degeneracy of a set of completions, in aggregate, beside their KL to the base model.

    `empty`: the share of completions with fewer than `NEAR_EMPTY_WORDS` words. Over the others: `english`, the share
    whose words are at least `ENGLISH_WORD_SHARE` English (`english_word_share`), and `distinct`, their mean
    distinct-word ratio (repetition lowers it). NaN where every completion is (near-)empty. These are averages over a
    set; `flag_completion` judges each completion, as the guarded front needs.
    """
    full = [text for text in texts if len(words(text)) >= NEAR_EMPTY_WORDS]
    nan = float("nan")
    return {
        "english": sum(english_word_share(t) >= ENGLISH_WORD_SHARE for t in full) / len(full) if full else nan,
        "empty": 1.0 - len(full) / len(texts),
        "distinct": sum(distinct_word_ratio(t) for t in full) / len(full) if full else nan,
    }
