"""Differential tests of the engine against stock SAM 2 (see ``oracle``)."""
