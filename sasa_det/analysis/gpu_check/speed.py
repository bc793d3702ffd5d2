"""The GPU check's speed sections: layers against a 3×3 conv, detectors' training throughput."""

from __future__ import annotations

from collections.abc import Callable, Iterator

__all__ = ["layers", "model_section"]


def layers(settings: dict) -> Iterator[dict]:
    """Layer speed and memory against a 3×3 conv (bfloat16 on CUDA)."""
    from sasa_det.analysis.layer_benchmark import benchmark_layers

    device = settings["device"]
    dry = settings["dry_run"]
    dtype = "float32" if device == "cpu" else "bfloat16"
    groups = [
        (
            "sasa_64ch_200x336",
            dict(channels=64, heads=8, height=200, width=336),
            ["sasa", "sasa_shift", "attention_stem"],
        ),
        (
            "sasa_256ch_50x84",
            dict(channels=256, heads=8, height=50, width=84),
            ["sasa", "sasa_cuda_core", "sasa_tensor_core"],
        ),
        (
            "aa_128ch_64x64",
            dict(channels=128, heads=8, height=64, width=64),
            ["aa", "aa_no_rel_padded", "aa_no_rel", "aa_sdpa", "aa_pooled"],
        ),
    ]
    for group, shape, cases in groups:
        if dry:
            shape = dict(channels=16, heads=2, height=8, width=12)
        rows = benchmark_layers(
            device=device,
            dtype=dtype,
            kernel_size=7,
            batch=1,
            repeats=1 if dry else 10,
            warmup=0 if dry else 2,
            cases=cases,
            isolate=False,
            **shape,
        )
        for row in rows:
            yield {
                "group": group,
                "dtype": dtype,
                **{k: v for k, v in row.items() if k != "description"},
                "flex_used": row.get("path") == "flex" if row["name"].startswith("aa") else None,
            }


def model_section(name: str) -> Callable[[dict], Iterator[dict]]:
    def run(settings: dict) -> Iterator[dict]:
        from sasa_det.analysis.model_benchmark import measure_model

        dry = settings["dry_run"]
        device = settings["device"]
        size, batch = (64, 1) if dry else (1024, 4)
        dtype = "float32" if device == "cpu" else "bfloat16"
        row = measure_model(
            name,
            device=device,
            dtype=dtype,
            height=size,
            width=size,
            batch=batch,
            repeats=1 if dry else 5,
            warmup=0 if dry else 1,
        )
        yield {"model": name, "dtype": dtype, "image": size, "batch": batch, **row}

    run.__doc__ = f"Training throughput of {name} and the time to its first step."
    return run
