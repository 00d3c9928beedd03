"""VPTR video prediction (Ye & Bilodeau): a frame autoencoder and transformers on its features."""
