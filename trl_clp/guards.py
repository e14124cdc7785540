"""Guards that stop a CLP run early with a message saying what to fix (output directory, disk space, reward values)."""

from __future__ import annotations

import functools
import inspect
import math
import numbers
import os
import shutil

import numpy as np
import torch
from torch import nn


def check_reward_values(values, name: str, expected: int) -> None:
    """Check what a reward function returned for `expected` completions.

    Raises:
        TypeError or ValueError naming the function, the position and what to return instead.
    """
    if not isinstance(values, (list, tuple, torch.Tensor, np.ndarray)):  # what TRL's `_calculate_rewards` takes
        raise TypeError(f"Reward function {name!r} returned {type(values).__name__}; return a list of floats.")
    if len(values) != expected:
        raise ValueError(
            f"Reward function {name!r} returned {len(values)} rewards for {expected} completions: return exactly one "
            "per completion (None where it does not apply)."
        )
    for index, value in enumerate(values):
        if value is None:
            continue
        if not isinstance(value, numbers.Real) and not (
            isinstance(value, (torch.Tensor, np.ndarray)) and math.prod(value.shape) == 1
        ):
            raise TypeError(
                f"Reward function {name!r} returned {value!r} ({type(value).__name__}) at position {index}: return a "
                "float, or None where the reward does not apply."
            )
        if not math.isfinite(float(value)):
            raise ValueError(
                f"Reward function {name!r} returned {float(value)} at position {index}: rewards must be finite (return "
                "None where a reward does not apply)."
            )


class RewardFunctionError(RuntimeError):
    """A reward function raised during training; the message names it and says how to continue."""

    def __init__(self, name: str, error: Exception):
        super().__init__(
            f"Reward function {name!r} raised {type(error).__name__}: {error}\nTraining stopped before this step's "
            "update; checkpoints already saved are complete. Fix the reward function and continue with "
            "`trainer.train(resume_from_checkpoint=True)`."
        )
        self.reward_name = name


def check_output_dir_writable(output_dir: str) -> None:
    """Fail before anything is loaded if `output_dir` cannot be created or written.

    Raises:
        ValueError naming the directory and what to change.
    """
    probe = os.path.join(output_dir, f".trl_clp_write_test_{os.getpid()}")
    try:
        os.makedirs(output_dir, exist_ok=True)
        with open(probe, "w") as handle:
            handle.write("ok")
        os.remove(probe)
    except OSError as error:
        raise ValueError(
            f"Cannot write to output_dir={output_dir!r} ({error.strerror or error}): checkpoints and the adapter would "
            "be lost. Choose a writable `output_dir`."
        ) from error


def check_free_disk_space(output_dir: str, required_bytes: int) -> None:
    """Fail before training if the disk of `output_dir` has less than `required_bytes` free.

    Raises:
        ValueError saying how much is free, how much is needed, and what to change.
    """
    free = shutil.disk_usage(output_dir).free
    if free < required_bytes:
        raise ValueError(
            f"output_dir={output_dir!r} has {free / 2**20:.1f} MiB free, but saving needs about "
            f"{required_bytes / 2**20:.1f} MiB (adapter, optimizer state, one checkpoint beside the next). Free some "
            "disk space, choose another `output_dir`, or set `save_strategy='no'`."
        )


def checkpoint_bytes(model: nn.Module, args) -> int:
    """Estimated bytes on disk while training: each checkpoint holds the trainable parameters and two Adam moments.

    Two checkpoints coexist while `save_total_limit` rotates them; with `save_strategy="no"`, only the final adapter
    is written.
    """
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    adapter = 4 * trainable + 2**20  # float32 weights, plus configs, tokenizer and trainer state
    if args.save_strategy == "no":
        return adapter
    return adapter + 2 * (adapter + 8 * trainable)


def checked_reward_function(reward_func, name: str):
    """Wrap a callable reward function so that a bad return value fails with a message naming it.

    The wrapper keeps the name (TRL labels metrics with it) and the sync/async kind of the original.
    """
    if inspect.iscoroutinefunction(reward_func) or inspect.iscoroutinefunction(type(reward_func).__call__):

        @functools.wraps(reward_func)
        async def async_checked(prompts, completions, **kwargs):
            try:
                values = await reward_func(prompts=prompts, completions=completions, **kwargs)
            except Exception as error:
                raise RewardFunctionError(name, error) from error
            check_reward_values(values, name, len(prompts))
            return values

        async_checked.__name__ = name
        return async_checked

    @functools.wraps(reward_func)
    def checked(prompts, completions, **kwargs):
        try:
            values = reward_func(prompts=prompts, completions=completions, **kwargs)
        except Exception as error:
            raise RewardFunctionError(name, error) from error
        check_reward_values(values, name, len(prompts))
        return values

    checked.__name__ = name
    return checked
