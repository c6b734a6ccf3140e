"""pipeline-kit: small helpers for batch pipelines that must survive reruns."""

__version__ = "0.4.1"
