"""The embedding model's transformer exported once to ONNX and run by ONNX Runtime.

Same weights, float32, same tokenizer and pooling: the vectors equal torch's to about 1e-6, and a
short query is encoded about twice as fast as through torch (`scripts/bench_embed.py`). The
export is checked against the torch model on probe texts before it is used; a model whose
pooling this module does not reproduce fails that check and stays on torch.

`quantized=True` serves an int8 copy of the export made with ONNX Runtime's dynamic quantization
(weights int8, activations quantized per call): deterministic from the float export, cached beside
it, and checked against torch with a looser bound (`MIN_AGREEMENT_INT8`), since int8 rounding moves
vectors by about 1% of their length.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kag.errors import MissingDependencyError

log = logging.getLogger(__name__)

# texts that exercise padding, truncation and punctuation; the export must reproduce torch on them
PROBES = (
    "What causes the seasons on Earth?",
    "Paid time off accrues at 1.5 days per month of service; unused days carry over to the next year.",
    "x",
    " ".join(["retrieval-augmented generation grounds answers in cited sources."] * 40),
)
# cosine of an exported vector and torch's on every probe; float32 graphs agree to ~1e-6
MIN_AGREEMENT = 0.9999
# int8 weights: cosine to torch about 0.99 on the probes; a broken quantization lands far below
MIN_AGREEMENT_INT8 = 0.97
EXPORT_VERSION = 1
MIB = 1024 * 1024


class OnnxMismatchError(RuntimeError):
    """The exported model does not reproduce the torch model's vectors."""


def model_fingerprint(model_path: str | Path) -> str:
    """sha256 over the model folder: each file's name and size, the whole of the small files and the
    first and last MiB of the weights. A changed model gets a new export; a copied one (an image
    layer, another venv) keeps its export."""
    root = Path(model_path)
    digest = hashlib.sha256(f"kag-onnx-export/{EXPORT_VERSION}".encode())
    for path in sorted(p for p in root.rglob("*") if p.is_file() and ".onnx" not in p.suffixes):
        size = path.stat().st_size
        digest.update(f"{path.relative_to(root).as_posix()}\0{size}\0".encode())
        with path.open("rb") as handle:
            if size <= 4 * MIB:
                digest.update(handle.read())
            else:
                digest.update(handle.read(MIB))
                handle.seek(-MIB, os.SEEK_END)
                digest.update(handle.read(MIB))
    return digest.hexdigest()[:24]


def _input_names(st_model: Any) -> list[str]:
    """The tokenizer outputs the transformer accepts, in a fixed order."""
    import inspect

    transformer = st_model[0].auto_model
    accepted = set(inspect.signature(transformer.forward).parameters)
    produced = st_model.tokenizer(["probe"], return_tensors="np")
    return [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in produced and n in accepted]


def export(st_model: Any, dest: Path) -> None:
    """Write `st_model`'s transformer (token ids -> last hidden state) to `dest` as ONNX, atomically."""
    import torch

    transformer = st_model[0].auto_model.eval()
    names = _input_names(st_model)

    class _Hidden(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = transformer

        def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
            # keywords, not positions: transformers' forward signatures differ between versions
            return self.model(**dict(zip(names, tensors, strict=True)), return_dict=True).last_hidden_state

    sample = st_model.tokenizer(list(PROBES[:2]), padding=True, return_tensors="pt")
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(f"{dest.name}.{os.getpid()}.partial")
    axes = {n: {0: "batch", 1: "tokens"} for n in names}
    try:
        # the tracer warns about Python branches on tensor values; the probe check below is what decides
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                _Hidden().eval(),
                tuple(sample[n] for n in names),
                str(partial),
                input_names=names,
                output_names=["last_hidden_state"],
                dynamic_axes=axes | {"last_hidden_state": {0: "batch", 1: "tokens"}},
                opset_version=17,
                dynamo=False,
            )
        os.replace(partial, dest)
    finally:
        partial.unlink(missing_ok=True)


def quantize(source: Path, dest: Path) -> None:
    """Write an int8 dynamic quantization of the float export `source` to `dest`, atomically."""
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise MissingDependencyError("onnxruntime is not installed", hint="pip install onnxruntime") from exc
    partial = dest.with_name(f"{dest.name}.{os.getpid()}.partial")
    try:
        # int8 weights per output channel, in the matmuls by a weight only: quantizing the attention's
        # activation-by-activation matmuls as well, or one scale per tensor, took the probes' lowest cosine
        # to torch from 0.98 down to 0.92
        quantize_dynamic(
            str(source),
            str(partial),
            weight_type=QuantType.QInt8,
            op_types_to_quantize=["MatMul"],
            per_channel=True,
            extra_options={"MatMulConstBOnly": True},
        )
        os.replace(partial, dest)
    finally:
        partial.unlink(missing_ok=True)


class OnnxEncoder:
    """Token ids -> mean-pooled, L2-normalized vectors with ONNX Runtime; thread-safe.

    A call of more than `batch_size` texts is cut into batches of texts of similar length (longest
    first, as sentence-transformers does), so padding costs little."""

    def __init__(
        self,
        onnx_path: Path,
        tokenizer: Any,
        names: Sequence[str],
        max_seq_length: int,
        threads: int,
        batch_size: int = 64,
    ):
        try:
            import onnxruntime as ort
        except ImportError as exc:  # pragma: no cover - a declared dependency
            raise MissingDependencyError("onnxruntime is not installed", hint="pip install onnxruntime") from exc
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # idle pool threads sleep instead of spinning: the hybrid retriever encodes the query and its
        # entities side by side with Tantivy and spaCy, and a spinning thread takes their core
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        self.tokenizer = tokenizer
        self.names = list(names)
        self.max_seq_length = max_seq_length
        self.batch_size = batch_size
        # HF fast tokenizers are not safe to call from several threads at once
        self._tokenizer_lock = threading.Lock()

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if len(texts) <= self.batch_size:
            return self._encode_batch(texts)
        # sentence-transformers' order: longest first by characters, so each batch pads little
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        out = np.empty((len(texts), 0), dtype=np.float32)
        for start in range(0, len(order), self.batch_size):
            part = order[start : start + self.batch_size]
            vectors = self._encode_batch([texts[i] for i in part])
            if out.shape[1] == 0:
                out = np.empty((len(texts), vectors.shape[1]), dtype=np.float32)
            out[part] = vectors
        return out

    def _encode_batch(self, texts: Sequence[str]) -> np.ndarray:
        with self._tokenizer_lock:
            batch = self.tokenizer(
                list(texts), padding=True, truncation=True, max_length=self.max_seq_length, return_tensors="np"
            )
        feeds = {n: np.asarray(batch[n], dtype=np.int64) for n in self.names}
        (hidden,) = self.session.run(["last_hidden_state"], feeds)
        mask = feeds["attention_mask"][..., None].astype(np.float32)
        pooled = (hidden * mask).sum(axis=1) / np.clip(mask.sum(axis=1), 1e-9, None)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return np.asarray(pooled / np.clip(norms, 1e-12, None), dtype=np.float32)


def _checked(
    dest: Path,
    st_model: Any,
    names: Sequence[str],
    threads: int,
    expected: np.ndarray,
    *,
    batch_size: int = 64,
    minimum: float = MIN_AGREEMENT,
) -> OnnxEncoder | str:
    """The encoder over `dest` if it reproduces `expected` on the probes, else why not."""
    try:
        encoder = OnnxEncoder(dest, st_model.tokenizer, names, int(st_model.max_seq_length), threads, batch_size)
        got = encoder.encode(PROBES)
    except MissingDependencyError:
        raise
    except Exception as exc:
        return f"it does not load: {exc}"
    agreement = float(np.min(np.sum(expected * got, axis=1))) if got.shape == expected.shape else -1.0
    if agreement >= minimum:
        return encoder
    return f"it does not reproduce the model's vectors (lowest cosine {agreement:.6f} < {minimum})"


def load(
    st_model: Any,
    model_path: str,
    cache_dir: Path,
    threads: int,
    *,
    quantized: bool = False,
    batch_size: int = 64,
) -> OnnxEncoder:
    """The ONNX encoder for `st_model`: exported into `cache_dir` on first use, then reused; checked
    against torch on the probe texts every time. A cached file that fails the check (cut short,
    overwritten) is made again once; `OnnxMismatchError` if a fresh one fails it too (a model whose
    pooling is not mean pooling). `quantized`: the int8 copy of the export (made from it once)."""
    source = cache_dir / f"{model_fingerprint(model_path)}.onnx"
    dest = source.with_suffix(".int8.onnx") if quantized else source
    minimum = MIN_AGREEMENT_INT8 if quantized else MIN_AGREEMENT
    names = _input_names(st_model)
    expected = np.asarray(st_model.encode(list(PROBES), normalize_embeddings=True, convert_to_numpy=True))

    def make() -> None:
        if not quantized or not source.is_file():
            log.info("exporting the embedding model to ONNX at %s", source)
            export(st_model, source)
        if quantized:
            log.info("quantizing the ONNX export to int8 at %s", dest)
            quantize(source, dest)

    cached = dest.is_file()
    if not cached:
        make()
    result = _checked(dest, st_model, names, threads, expected, batch_size=batch_size, minimum=minimum)
    if cached and not isinstance(result, OnnxEncoder):
        log.warning("the cached ONNX export %s fails its check (%s); exporting it again", dest, result)
        source.unlink(missing_ok=True)  # a damaged float export would only be quantized again
        make()
        result = _checked(dest, st_model, names, threads, expected, batch_size=batch_size, minimum=minimum)
    if isinstance(result, OnnxEncoder):
        return result
    raise OnnxMismatchError(f"the ONNX export of {model_path} fails its check: {result}")
