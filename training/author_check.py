"""Is the twin more the author than the base model? Train one sample author's twin and print the gate's figures.

    python training/author_check.py [--author mara-lindqvist] [--steps 150] [--ranks 2] [--keep DIR]

The datasets come straight from the sample corpus (twin.demo.corpus_dataset: every paragraph of the author's
articles is a passage, its question built from the title, a quarter of the documents held out whole), one
version per sample author, so the authorship check has other authors to contrast with. Training is the
platform's own (the deepspeed launcher, ZeRO-2, `training/config.yaml` with `--steps` SFT steps), and so is
the evaluation (`twin.evaluation.gate`): held-out perplexity, style similarity with its 95% bootstrap CI
beside the base model's, and the authorship share of the twin's answers beside the base's.

Everything lands in a throwaway data folder with an SQLite MLflow store (`--keep DIR` keeps them there).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--author", default="mara-lindqvist")
    parser.add_argument("--steps", type=int, default=150, help="SFT steps (the demo's config has 30)")
    parser.add_argument("--ranks", type=int, default=2, help="deepspeed launcher ranks (CPU processes here)")
    parser.add_argument("--examples", type=int, default=16, help="held-out instructions evaluated")
    parser.add_argument("--keep", type=Path, default=None, help="data folder to keep (default: a temporary one)")
    args = parser.parse_args(argv)

    data_dir = args.keep or Path(tempfile.mkdtemp(prefix="twin-author-check-"))
    data_dir.mkdir(parents=True, exist_ok=True)
    # Before the settings are read: the launcher's ranks inherit the same environment.
    os.environ.update({"TWIN_DATA_DIR": str(data_dir), "MLFLOW_TRACKING_URI": f"sqlite:///{data_dir}/mlflow.db",
                       "TWIN_TRAINING_NUM_PROCS": str(args.ranks), "TWIN_EVAL_MAX_EXAMPLES": str(args.examples),
                       "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"})
    from twin.demo.corpus_dataset import author_rows, write_version
    from twin.demo.corpus_files import AUTHORS
    from twin.settings import get_settings
    from twin.storage.artifacts import LocalArtifactStore
    from twin.training.demo import demo_run

    settings = get_settings()
    import mlflow

    # An SQLite store puts artifacts in ./mlruns of whoever logs them (the launcher runs in the repository):
    # the experiment is created first with its artifacts in the data folder.
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    if mlflow.get_experiment_by_name(settings.training_experiment) is None:
        mlflow.create_experiment(settings.training_experiment, artifact_location=(data_dir / "mlartifacts").as_uri())
    store = LocalArtifactStore(settings.artifacts_dir)
    versions = {a.id: write_version(store, a.id, author_rows(a.id)) for a in AUTHORS}
    config = yaml.safe_load((REPO / "training" / "config.yaml").read_text())
    config["sft"]["max_steps"] = args.steps
    config["save_steps"] = max(10, args.steps // 3)
    config["deepspeed"] = str(REPO / "training" / config["deepspeed"])
    config_file = data_dir / "author_check.yaml"
    config_file.write_text(yaml.safe_dump(config))

    outcome = demo_run(settings, args.author, config=config_file, dataset_version=versions[args.author],
                       run_name=f"author-check-{args.steps}")
    print(json.dumps(outcome, indent=2, default=str))
    style, gain, authorship = outcome["style"] or {}, outcome["style_gain_over_base"] or {}, outcome["authorship"] or {}
    print(f"\n{args.author}, {args.steps} SFT steps, {args.ranks} ranks: gate {outcome['gate']}")
    print(f"  perplexity        {outcome['perplexity']}")
    print(f"  style similarity  twin {style.get('candidate')}  base {style.get('base')}")
    print(f"  style gain        {gain}")
    print(f"  style scale       {outcome.get('style_scale')}")
    print(f"  passage similarity (not gated)  {outcome.get('passage_similarity')}")
    print(f"  authorship share  twin {authorship.get('candidate')}  base {authorship.get('base')}  "
          f"(held-out passages: {authorship.get('held_out_passages')})")
    print(f"  data and MLflow store: {data_dir}")
    return 0 if outcome["gate"] == "passed" else 1


if __name__ == "__main__":
    sys.exit(main())
