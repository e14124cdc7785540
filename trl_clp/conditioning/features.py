"""Conditioning features: the map φ from a conditioning vector to the coefficients of a conditioned layer's blocks.

A conditioned LoRA layer holds K rank-r blocks; a row with conditioning vector v (its weighting w, plus the KL entry
with multi-α, see `trl_clp.sampling.kl_conditioning_vector`; n entries on the simplex) runs the layer whose LoRA delta
is `Σ_k φ_k(v) · Δ_k`. The features chosen (`conditioning_features`) say which blocks there are, in this order:

- `linear` (always): one block per entry of v, φ_i(v) = v_i — the per-objective blocks of CLP and Rewarded Soups;
- `shared`: one block with φ(v) = 1 at every v — capacity that every weighting trains and a soup lacks;
- `pairwise`: one block per pair i < j, φ_ij(v) = v_i·v_j — zero at every corner of the simplex (so the corners stay
  the per-objective blocks) and largest inside, where the interior gets capacity of its own.

Every feature is normalised to 1 at the centre of the simplex u = (1/n, …, 1/n): the coefficient of block k is
`φ_k(v) / φ_k(u)`, i.e. `n·v_i`, `1` and `n²·v_i·v_j` (`4·w_1·w_2` for two objectives: 1 at the midpoint, its
maximum). Every block then has the same coefficient at u, which is what a plain PEFT load (every block scaled by 1,
no conditioning) computes: such a load is the model at the uniform weighting, whatever the features (see `layer.py`
for the LoRA scale that makes the linear blocks' `n·v_i` the weighting itself).

With multi-α the KL entry is one more objective (of reward 0) to the features: `pairwise` then also pairs each
objective with it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

CONDITIONING_FEATURES = ("linear", "shared", "pairwise")


def check_conditioning_features(features: Sequence[str], conditioning: str | None = None) -> tuple[str, ...]:
    """Validate a choice of features and return it in block order (`CONDITIONING_FEATURES`'s order).

    Args:
        features: the names chosen.
        conditioning: the conditioning variant, if known: the prompting baseline (`"prompt"`) has no blocks.

    Raises:
        ValueError: an unknown or repeated name, no `"linear"`, or features beyond it for `"prompt"`.
    """
    if isinstance(features, str):
        raise ValueError(f"`conditioning_features` is a list of names, e.g. ['linear', 'shared'], got {features!r}.")
    unknown = [name for name in features if name not in CONDITIONING_FEATURES]
    if unknown:
        raise ValueError(
            f"`conditioning_features` has unknown names {unknown}: choose among {list(CONDITIONING_FEATURES)}."
        )
    duplicates = sorted({name for name in features if list(features).count(name) > 1})
    if duplicates:
        raise ValueError(f"`conditioning_features` lists {duplicates} more than once: give each feature once.")
    if "linear" not in features:
        raise ValueError(
            f"`conditioning_features` must include 'linear' (the per-objective blocks), got {list(features)}: "
            f"e.g. {['linear', *features]}."
        )
    if conditioning == "prompt" and set(features) != {"linear"}:
        raise ValueError(
            f"conditioning='prompt' writes the weighting into the prompt and trains one shared LoRA: it has no blocks "
            f"for `conditioning_features={list(features)}`. Remove `conditioning_features` (or set it to ['linear']), "
            f"or choose conditioning='full', 'attn' or 'logit'."
        )
    return tuple(name for name in CONDITIONING_FEATURES if name in features)


def num_blocks_of(features: Sequence[str], vector_size: int) -> int:
    """K, the blocks per conditioned layer: n linear, 1 shared, n(n−1)/2 pairwise (n = `vector_size`)."""
    sizes = {"linear": vector_size, "shared": 1, "pairwise": vector_size * (vector_size - 1) // 2}
    return sum(sizes[name] for name in check_conditioning_features(features))


def block_names(features: Sequence[str], names: Sequence[str]) -> list[str]:
    """One label per block, in block order: the objective's name, `"shared"`, `"a*b"` for the pair (a, b).

    Args:
        features: the conditioning features.
        names: one name per entry of the conditioning vector (the objectives, then e.g. `"kl"`).
    """
    labels = []
    for feature in check_conditioning_features(features):
        if feature == "linear":
            labels += list(names)
        elif feature == "shared":
            labels.append("shared")
        else:
            labels += [f"{names[i]}*{names[j]}" for i in range(len(names)) for j in range(i + 1, len(names))]
    return labels


def block_coefficients(vectors: torch.Tensor, features: Sequence[str] = ("linear",)) -> torch.Tensor:
    """The coefficient of every block per row: the features of v, each normalised to 1 at the simplex's centre.

    Args:
        vectors: `(B, n)` conditioning vectors on the simplex.
        features: the conditioning features (validated; blocks in `CONDITIONING_FEATURES`'s order).

    Returns:
        `(B, K)`: `[n·v_1 … n·v_n | 1 | n²·v_i·v_j for i < j]`, the parts present in `features`.
    """
    size = vectors.size(-1)
    parts = []
    for feature in check_conditioning_features(features):
        if feature == "linear":
            parts.append(size * vectors)  # (B, n)
        elif feature == "shared":
            parts.append(torch.ones_like(vectors[..., :1]))  # (B, 1)
        else:
            first, second = torch.triu_indices(size, size, offset=1, device=vectors.device)  # pairs i < j, row-major
            parts.append(size**2 * vectors[..., first] * vectors[..., second])  # (B, n(n−1)/2)
    return torch.cat(parts, dim=-1)
