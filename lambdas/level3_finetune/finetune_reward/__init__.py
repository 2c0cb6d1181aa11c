"""Sample reward function for Level 3 reinforcement fine-tuning: scores responses with checkable answers."""
