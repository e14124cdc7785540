"""The text scorers (`sentiment`, `objectivity`, `readability`, `descriptiveness`) against the packages' own outputs."""

import sys

import pytest

from trl_clp import rewards
from trl_clp.rewards import (
    descriptiveness_reward,
    objectivity_reward,
    readability_reward,
    resolve_reward_function,
    sentiment_reward,
)

TEXTS = [
    "This is a wonderful, delightful little cafe and the staff were lovely!",
    "The parcel weighs 2 kg and ships within 3 working days.",
    "Terrible service. I hated every minute and will never return.",
    "Institutional accountability necessitates comprehensive documentation.",
]


def as_messages(texts):
    return [[{"role": "assistant", "content": text}] for text in texts]


def test_sentiment_is_vaders_compound_score_mapped_to_zero_one():
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    analyzer = SentimentIntensityAnalyzer()
    expected = [(analyzer.polarity_scores(text)["compound"] + 1) / 2 for text in TEXTS]
    assert sentiment_reward(TEXTS) == pytest.approx(expected, abs=1e-12)
    assert sentiment_reward(as_messages(TEXTS)) == pytest.approx(expected, abs=1e-12)
    # The texts were chosen to span the scale: a scorer that did nothing would not order them.
    assert expected[0] > 0.9 and expected[2] < 0.1 and expected[1] == 0.5


def test_objectivity_is_one_minus_textblob_subjectivity():
    from textblob import TextBlob

    expected = [1 - TextBlob(text).sentiment.subjectivity for text in TEXTS]
    assert objectivity_reward(TEXTS) == pytest.approx(expected, abs=1e-12)
    assert objectivity_reward(as_messages(TEXTS)) == pytest.approx(expected, abs=1e-12)
    assert expected[1] == 1.0 and expected[0] < 0.5


def test_readability_is_flesch_reading_ease_with_pyphen_syllables_scaled_to_zero_one():
    import pyphen

    # An independent Flesch reading ease: 206.835 − 1.015·words/sentences − 84.6·syllables/words, one sentence each,
    # syllables as textstat's fallback counts them (hyphenation points + 1, en_US dictionary).
    dictionary = pyphen.Pyphen(lang="en_US")
    texts = [TEXTS[0], TEXTS[3], "We went to the park. The sun was warm and the grass was green and soft."]
    sentences = [1, 1, 2]
    expected = []
    for text, num_sentences in zip(texts, sentences, strict=True):
        words = [word.strip(".,!").lower() for word in text.split()]
        syllables = sum(len(dictionary.positions(word)) + 1 for word in words)
        score = 206.835 - 1.015 * len(words) / num_sentences - 84.6 * syllables / len(words)
        expected.append(min(max(score, 0.0), 100.0) / 100)
    assert readability_reward(texts) == pytest.approx(expected, abs=1e-3)  # textstat rounds to 2 decimals
    assert readability_reward(as_messages(texts)) == pytest.approx(expected, abs=1e-3)
    assert 0 < expected[0] < 1 and expected[1] == 0.0 and expected[2] > 0.9


def test_descriptiveness_is_distinct_adjectives_per_word_under_textblobs_pattern_tagger():
    from textblob.en.taggers import PatternTagger

    tagger = PatternTagger()
    expected = []
    for text in TEXTS:
        words = [(word.lower(), tag) for word, tag in tagger.tag(text) if any(c.isalnum() for c in word)]
        expected.append(len({word for word, tag in words if tag in ("JJ", "JJR", "JJS")}) / len(words))
    assert descriptiveness_reward(TEXTS) == pytest.approx(expected, abs=1e-12)
    assert descriptiveness_reward(as_messages(TEXTS)) == pytest.approx(expected, abs=1e-12)
    # By hand: 2 adjectives in 5 words; an adjective said three times counts once (1 in 6 words); none in the facts.
    by_hand = ["A beautiful and functional item.", "The food was great, great, great!", TEXTS[1]]
    assert descriptiveness_reward(by_hand) == pytest.approx([2 / 5, 1 / 6, 0.0])
    assert expected[0] == pytest.approx(4 / 12)  # wonderful, delightful, little, lovely


def test_readability_runs_without_downloading_nltk_data(monkeypatch):
    import nltk

    def no_network(*args, **kwargs):
        raise AssertionError("a text scorer tried to download NLTK data")

    monkeypatch.setattr(nltk, "download", no_network)
    assert 0 < readability_reward([TEXTS[0]])[0] < 1
    assert 0 < descriptiveness_reward([TEXTS[0]])[0] < 1


@pytest.mark.parametrize("reward", [sentiment_reward, objectivity_reward, readability_reward, descriptiveness_reward])
def test_a_completion_without_words_scores_zero(reward):
    # Otherwise an empty answer would be perfectly objective (1.0), perfectly readable, and neutral in tone.
    assert reward(["", "  ...  ", TEXTS[0]])[:2] == [0.0, 0.0]


@pytest.mark.parametrize(
    ("reward", "module"),
    [
        (sentiment_reward, "vaderSentiment.vaderSentiment"),
        (objectivity_reward, "textblob"),
        (readability_reward, "textstat"),
        (descriptiveness_reward, "textblob.en.taggers"),
    ],
)
def test_a_missing_package_names_the_extra(monkeypatch, reward, module):
    monkeypatch.setitem(sys.modules, module, None)  # import of it raises ImportError
    rewards._vader_analyzer.cache_clear()
    rewards._pattern_tagger.cache_clear()
    try:
        with pytest.raises(ImportError, match=r'pip install "trl-clp\[text-rewards\]"'):
            reward(TEXTS)
    finally:
        rewards._vader_analyzer.cache_clear()
        rewards._pattern_tagger.cache_clear()


@pytest.mark.parametrize("name", ["sentiment", "objectivity", "readability", "descriptiveness"])
def test_scorers_are_usable_by_name(name):
    assert resolve_reward_function(name) is getattr(rewards, f"{name}_reward")
