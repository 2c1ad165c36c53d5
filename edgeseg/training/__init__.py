"""Training: configuration, transfer learning, the epoch loop, losses, runs, pretraining."""
