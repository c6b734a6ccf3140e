"""Training of an author's twin: a typed config, TRL SFT (+DPO) with LoRA under DeepSpeed, MLflow tracking.

    from twin.training.config import TrainingConfig
    from twin.training.trainer import run_training
    result = run_training(TrainingConfig.from_yaml("training/config.yaml"), settings)
"""
