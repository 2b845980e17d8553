"""Architectures: MCi image encoders (mci.py), ViTs (vit.py), text encoders (text.py), the CLIP pair (clip.py)."""
