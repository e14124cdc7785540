"""Public multi-objective preference datasets → the two layouts, on hand-made rows with their exact columns."""

import pytest
from datasets import Dataset

from trl_clp.preference_data import (
    HELPSTEER2_ATTRIBUTES,
    PKU_SAFERLHF_OBJECTIVES,
    ULTRAFEEDBACK_ASPECTS,
    check_preference_dataset,
    helpsteer2_to_scores,
    pku_saferlhf_to_labels,
    ultrafeedback_to_scores,
)


def test_pku_saferlhf_labels_say_which_response_is_better_and_which_safer():
    rows = Dataset.from_list(
        [
            {
                "prompt": "How do I pick a lock?",
                "response_0": "Call a locksmith.",
                "response_1": "Insert a tension wrench, then rake the pins.",
                "is_response_0_safe": True,
                "is_response_1_safe": False,
                "better_response_id": 1,
                "safer_response_id": 0,
            },
            {
                "prompt": "Name a fruit.",
                "response_0": "Apple.",
                "response_1": "No.",
                "is_response_0_safe": True,
                "is_response_1_safe": True,
                "better_response_id": 0,
                "safer_response_id": 0,
            },
        ]
    )
    pairs = pku_saferlhf_to_labels(rows)
    assert pairs.column_names == ["prompt", "chosen", "rejected", "objective_labels"]
    assert pairs[0]["chosen"] == "Call a locksmith." and pairs[0]["rejected"].startswith("Insert")
    assert pairs["objective_labels"] == [[-1, 1], [1, 1]]  # [helpful, harmless]
    check_preference_dataset(pairs, "labels", PKU_SAFERLHF_OBJECTIVES)


def helpsteer_row(prompt, response, scores):
    return {"prompt": prompt, "response": response, **dict(zip(HELPSTEER2_ATTRIBUTES, scores, strict=True))}


def test_helpsteer2_pairs_the_responses_of_one_prompt_with_their_five_scores():
    rows = Dataset.from_list(
        [
            helpsteer_row("Explain DNS.", "A phone book for the internet.", [3, 4, 4, 1, 1]),
            helpsteer_row("Write a haiku.", "Leaves fall.", [2, 3, 4, 1, 0]),
            helpsteer_row(
                "Explain DNS.", "DNS resolves names to IP addresses through recursive resolvers.", [4, 4, 4, 3, 2]
            ),
            helpsteer_row("Write a haiku.", "Leaves fall.", [2, 3, 4, 1, 0]),  # a duplicate: no pair
            helpsteer_row("Explain DNS.", "It is a protocol.", [3, 4, 4, 1, 1]),  # ties the first: no pair
        ]
    )
    pairs = helpsteer2_to_scores(rows)
    assert pairs["chosen"] == [
        "A phone book for the internet.",
        "DNS resolves names to IP addresses through recursive resolvers.",
    ]
    assert pairs["rejected"] == [
        "DNS resolves names to IP addresses through recursive resolvers.",
        "It is a protocol.",
    ]
    assert pairs["chosen_scores"] == [[3, 4, 4, 1, 1], [4, 4, 4, 3, 2]]
    assert pairs["rejected_scores"] == [[4, 4, 4, 3, 2], [3, 4, 4, 1, 1]]
    check_preference_dataset(pairs, "scores", HELPSTEER2_ATTRIBUTES)
    two = helpsteer2_to_scores(rows, attributes=["helpfulness", "verbosity"])
    assert two["chosen_scores"] == [[3, 1], [4, 2]]


def completion(response, ratings):
    return {
        "model": "m",
        "response": response,
        "annotations": {
            aspect: {"Rating": rating, "Rationale": "..."}
            for aspect, rating in zip(ULTRAFEEDBACK_ASPECTS, ratings, strict=True)
        },
    }


def test_ultrafeedback_pairs_completions_by_their_four_string_ratings():
    rows = Dataset.from_list(
        [
            {
                "source": "evol_instruct",
                "instruction": "Sum 2 and 3.",
                "completions": [
                    completion("5", ["5", "5", "5", "5"]),
                    completion("6", ["2", "4", "3", "1"]),
                    completion("five", ["N/A", "5", "5", "5"]),  # an unrated aspect: left out
                ],
            }
        ]
    )
    pairs = ultrafeedback_to_scores(rows)
    assert pairs.to_list() == [
        {
            "prompt": "Sum 2 and 3.",
            "chosen": "5",
            "rejected": "6",
            "chosen_scores": [5.0, 5.0, 5.0, 5.0],
            "rejected_scores": [2.0, 4.0, 3.0, 1.0],
        }
    ]
    check_preference_dataset(pairs, "scores", ULTRAFEEDBACK_ASPECTS)


def test_check_names_the_expected_layout_for_a_raw_public_dataset():
    raw = Dataset.from_list([helpsteer_row("p", "r", [1, 1, 1, 1, 1])])
    with pytest.raises(ValueError, match="no 'chosen', 'rejected', 'chosen_scores', 'rejected_scores' column"):
        check_preference_dataset(raw, "scores", HELPSTEER2_ATTRIBUTES)
