"""Embedding throughput of one GPU (or CPU) with sentence-transformers, on kag's own chunks.

    python scripts/bench_gpu_embed.py --model MODEL_DIR --texts chunks.json [--device cuda]

The input of the scale-out estimate in docs/scale-out.md: chunks per second one embedding actor
sustains. `--texts` is a JSON list of chunk texts (kag's chunker output); they are repeated until
`--total` texts, embedded in batches of each `--batch-sizes` value, in fp32 and fp16. Needs only
torch and sentence-transformers, so it runs on a GPU machine without the rest of kag installed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="local sentence-transformers model folder")
    parser.add_argument("--texts", required=True, help="JSON list of chunk texts")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--total", type=int, default=50_000, help="texts embedded per measurement")
    parser.add_argument("--batch-sizes", default="64,256,1024")
    parser.add_argument("--dtypes", default="fp32,fp16")
    args = parser.parse_args()

    import torch
    from sentence_transformers import SentenceTransformer

    base = json.load(open(args.texts))
    texts = (base * (args.total // len(base) + 1))[: args.total]
    model = SentenceTransformer(args.model, device=args.device, local_files_only=True)
    tokens = [len(model.tokenizer(t, add_special_tokens=True)["input_ids"]) for t in base]
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else args.device
    print(
        f"device {name}; torch {torch.__version__}; {len(base)} distinct chunks, "
        f"{statistics.fmean(tokens):.0f} tokens each on average (max {max(tokens)}, truncation at "
        f"{model.max_seq_length}); {args.total} texts per measurement\n"
    )
    print("| dtype | batch | seconds | chunks/s | tokens/s |")
    print("|---|---|---|---|---|")
    avg_tokens = statistics.fmean(tokens)
    for dtype in args.dtypes.split(","):
        model = model.half() if dtype == "fp16" else model.float()
        for batch in (int(b) for b in args.batch_sizes.split(",")):
            model.encode(texts[: batch * 4], batch_size=batch, normalize_embeddings=True)  # warm-up
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            started = time.perf_counter()
            model.encode(texts, batch_size=batch, normalize_embeddings=True, convert_to_numpy=True)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            seconds = time.perf_counter() - started
            rate = len(texts) / seconds
            print(f"| {dtype} | {batch} | {seconds:.2f} | {rate:,.0f} | {rate * avg_tokens:,.0f} |", flush=True)


if __name__ == "__main__":
    main()
