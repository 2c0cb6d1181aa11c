"""Building blocks every level uses, with the kit's security defaults written once."""
