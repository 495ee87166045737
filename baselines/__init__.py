"""The algorithm zoo: one module per algorithm, registered by name."""
