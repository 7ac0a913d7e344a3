"""``python -m benchmarks NAME [args]``: run one benchmark module's ``main``."""

import importlib
import sys

BENCHMARKS = {
    "pipeline": "benchmarks.pipeline",
    "loader": "benchmarks.loader",
    "model": "benchmarks.model_speed",
    "predict": "benchmarks.predict_speed",
    "finetune": "benchmarks.finetune_cache",
    "train": "benchmarks.train_speed",
    "gpu": "benchmarks.gpu",
    "agreement": "benchmarks.bf16_agreement",
    "serve_memory": "benchmarks.serve_memory",
    "diagnostics": "benchmarks.diagnostics_cost",
}


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in BENCHMARKS:
        print(f"usage: python -m benchmarks {{{','.join(BENCHMARKS)}}} [args]", file=sys.stderr)
        raise SystemExit(2)
    importlib.import_module(BENCHMARKS[sys.argv[1]]).main(sys.argv[2:])


if __name__ == "__main__":
    main()
