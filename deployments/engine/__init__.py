"""The SAM 2 session engine: plain Python, no Ray or HTTP. Its types, errors and settings are
in ``deployments.protocol``, which the ingress imports without loading torch."""

import os

# SAM 2's propagate_in_video draws a tqdm bar on every call; a server logs none. tqdm reads
# this when it is first imported, so it is set before sam2 is.
os.environ.setdefault("TQDM_DISABLE", "1")

from deployments.engine.engine import SessionEngine
from deployments.engine.models import load_predictor
from deployments.engine.session import EngineSession

__all__ = ["EngineSession", "SessionEngine", "load_predictor"]
