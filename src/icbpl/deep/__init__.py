"""Training through the encoder: Barlow Twins pre-training, end-to-end fine-tuning, DDP helpers."""
