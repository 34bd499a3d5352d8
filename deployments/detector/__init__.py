"""The SAM 3 concept detector: every instance of a text prompt on one frame, through
transformers' plain-PyTorch ``Sam3Model``. Plain Python: no Ray, no HTTP, no SAM 2 engine (an
import-linter contract keeps it so); the Serve deployment that owns it lives outside.

Modules import their siblings by their own path; this ``__init__`` only re-exports."""

from deployments.detector.detector import ConceptDetector
from deployments.detector.loading import load_detector
from deployments.detector.postprocessing import Instance

__all__ = ["ConceptDetector", "Instance", "load_detector"]
