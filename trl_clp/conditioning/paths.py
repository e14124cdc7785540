"""Where a CLP model's files are: a local folder or a hub repository id, and the base model an adapter records.

`SteerableModel.from_pretrained` and the server resolve paths here, so a missing local folder is named as one (not
rejected by the hub client as a malformed repository id) and a relative base-model path recorded by a run started
elsewhere is still found.
"""

from __future__ import annotations

import os

from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id


def check_path_or_repo_id(path_or_id: str, what: str = "CLP model", hint: str = "") -> str:
    """`path_or_id` with `~` expanded, after checking that a local path exists.

    A string that starts with `/`, `.` or `~`, has more than one path separator, or is not a valid hub repository
    id is a local path: if it does not exist, say so here rather than let the hub client reject it as a repo id.

    Raises:
        FileNotFoundError naming the missing folder.
    """
    path = os.path.expanduser(path_or_id)
    if os.path.exists(path):
        return path
    looks_local = path_or_id.startswith(("/", ".", "~")) or path_or_id.count(os.sep) > 1
    if not looks_local:
        try:
            validate_repo_id(path_or_id)
        except HFValidationError:
            looks_local = True
    if looks_local:
        raise FileNotFoundError(
            f"The {what} folder {path_or_id!r} does not exist (resolved to {os.path.abspath(path)!r} from the working "
            f"directory {os.getcwd()!r}). Check the path, or give a hub repository id such as 'user/model'.{hint}"
        )
    return path_or_id


# How to name another base model than the one an adapter records, from Python and from the command line.
BASE_MODEL_HINT = (
    "`SteerableModel.from_pretrained(path, base_model=...)` "
    "(`--base_model` for `trl-clp evaluate`, `export` and `serve`)."
)


def resolve_recorded_base_model(recorded: str | None, adapter_path: str) -> str:
    """The base model an adapter's `base_model_name_or_path` names, usable from any working directory.

    A relative path was recorded relative to the working directory of the run that saved the adapter (the main job
    records `outputs/clp-demo/base_model`): when it does not exist from here, it is looked up from the adapter folder
    and each of its parents.

    Raises:
        ValueError: nothing was recorded (an adapter trained from an in-memory base model).
        FileNotFoundError: a recorded local path that cannot be found.
    """
    if not recorded:
        raise ValueError(
            f"The adapter in {adapter_path!r} does not record its base model (`base_model_name_or_path` is "
            f"{recorded!r}: it was trained from an in-memory model). Pass the model instance, its folder or hub id: "
            + BASE_MODEL_HINT
        )
    hint = " Or pass the base model: " + BASE_MODEL_HINT
    if os.path.isabs(recorded) or os.path.exists(recorded) or not os.path.isdir(adapter_path):
        return check_path_or_repo_id(recorded, "base model", hint)
    folder = os.path.abspath(adapter_path)
    while True:
        candidate = os.path.join(folder, recorded)
        if os.path.isdir(candidate):
            return candidate
        parent = os.path.dirname(folder)
        if parent == folder:
            return check_path_or_repo_id(recorded, "base model", hint)
        folder = parent


def absolute_if_local(path_or_id: str | None) -> str | None:
    """An existing local folder as an absolute path (loadable from any working directory); anything else as is."""
    if path_or_id and os.path.isdir(path_or_id):
        return os.path.abspath(path_or_id)
    return path_or_id


def resolve_clp_file(path_or_id: str, filename: str, **hub_kwargs) -> str:
    """Path of `filename` in a local directory or a hub repository (downloaded to the cache)."""
    if os.path.isdir(path_or_id):
        path = os.path.join(path_or_id, filename)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path_or_id!r} has no {filename}.")
        return path
    from huggingface_hub import hf_hub_download

    return hf_hub_download(path_or_id, filename, **hub_kwargs)
