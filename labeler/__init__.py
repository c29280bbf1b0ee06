"""Labeler: annotation-free image labeling with CLIP, DINO and LLM descriptions.

The library is the front door; the CLI (``python -m labeler``) and the browser
app (``python app.py``) only call it. Heavy packages (torch, open_clip,
transformers) are imported lazily by the modules that need them.
"""

__version__ = "0.1.0"
