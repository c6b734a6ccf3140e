"""Evaluation of a twin version against the base model (and the champion) on the author's held-out set.

    from twin.evaluation.gate import evaluate_and_gate
    report = evaluate_and_gate(settings, "mara-lindqvist", "3")   # tags the version, logs to MLflow
"""
