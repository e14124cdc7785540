"""GGUF checkpoints (llama.cpp's one-file format) as standard transformers folders.

transformers reads a GGUF file only through `from_pretrained(folder, gguf_file=...)`, which dequantises the weights
and attaches a `GgufHfQuantizer`: TRL's model loading does not pass `gguf_file` on ("Unrecognized model"), and
`save_pretrained` refuses while the quantizer is attached. Converting once gives a folder that every loader reads:

    trl-clp convert-gguf SmolLM2-135M-Instruct.Q4_1.gguf models/smollm2-135m
    trl-clp train --model_name_or_path models/smollm2-135m ...

Needs `pip install "trl-clp[gguf]"` (the `gguf` package, which transformers uses to read the file).
"""

from __future__ import annotations

import os

import torch

from .extras import require

CONVERT_HINT = (
    "Convert it once into a standard transformers folder with `trl-clp convert-gguf FILE.gguf OUTPUT_DIR` (or "
    "`trl_clp.gguf.convert_gguf`), then give that folder as the model path."
)


def gguf_files(folder: str) -> list[str]:
    """Names of the `.gguf` files in `folder` when it holds no `config.json` (a GGUF-only folder), else `[]`."""
    if not os.path.isdir(folder) or os.path.isfile(os.path.join(folder, "config.json")):
        return []
    return sorted(name for name in os.listdir(folder) if name.lower().endswith(".gguf"))


def check_not_gguf(path: str, what: str = "model", hint: str = "") -> None:
    """Refuse a GGUF file, or a folder holding only GGUF files, where a transformers model folder is needed.

    Raises:
        ValueError: `path` is a GGUF checkpoint; the message names `trl-clp convert-gguf`, then `hint`.
    """
    found = [os.path.basename(path)] if path.lower().endswith(".gguf") else gguf_files(path)
    if found:
        raise ValueError(
            f"The {what} {path!r} is a GGUF checkpoint ({', '.join(found)}), not a model folder. {CONVERT_HINT}{hint}"
        )


def convert_gguf(gguf_path: str, output_dir: str, dtype: torch.dtype | str = torch.float32) -> list[str]:
    """Write the model and tokenizer of a GGUF file as a standard transformers folder.

    The weights are dequantised to `dtype` and saved as safetensors, beside `config.json` (without the GGUF
    quantization entry), `generation_config.json` and the tokenizer files with the chat template the GGUF carries.
    The folder then loads with plain `AutoModelForCausalLM.from_pretrained(output_dir)`.

    Args:
        gguf_path: a `.gguf` file of any architecture transformers reads from GGUF (llama, mistral, qwen2, phi3, ...).
        output_dir: the folder to write; it must not exist or be empty.
        dtype: the dtype of the saved weights (`torch.float32`, or `"bfloat16"` to halve the size).

    Returns:
        the paths written, sorted.

    Raises:
        ImportError: the `gguf` package is missing.
        FileNotFoundError: `gguf_path` is not a file.
        ValueError: `output_dir` is not empty, or transformers cannot read the file's architecture.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    require("gguf", "gguf", "reading GGUF files")  # transformers' reader uses it
    if not os.path.isfile(gguf_path):
        raise FileNotFoundError(f"The GGUF file {gguf_path!r} does not exist (looked in {os.getcwd()}).")
    if os.path.isdir(output_dir) and os.listdir(output_dir):
        raise ValueError(f"{output_dir!r} is not empty: give a new folder for the converted model.")
    dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    folder, filename = os.path.split(os.path.abspath(gguf_path))
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=filename, dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=filename)
    # The weights are already dequantised: without the GGUF quantizer the model saves and reloads as a plain one.
    model.hf_quantizer = None
    del model.config.quantization_config
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    return sorted(os.path.join(output_dir, name) for name in os.listdir(output_dir))
