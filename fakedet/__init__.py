"""fakedet: train, check and use detectors of AI-generated images.

Importing the package is cheap on purpose: torch is only imported by the modules that need it.
"""

__version__ = "0.7.0"
